"""How containers are read: the one structure protocol every walker of the package uses.

A container module (``Sequential``, ``BasicBlock``, ``Graph``) describes
itself by ``structure()`` as one of three nodes, and is rebuilt from a node
of the same kind by ``type(module).rebuild(node)``:

* :class:`Chain` -- children applied in order;
* :class:`Residual` -- ``act(main(x) + shortcut(x))``: two chains and a join
  (the ResNet basic block; ``shortcut`` empty means the identity);
* :class:`Dag` -- a directed acyclic graph of layer nodes and sum nodes.

Folding batch norm, switch discovery, conversion and op counting all walk
these nodes (:func:`leaves`, :func:`map_leaves` and the walkers in those
modules), so a new block type is one edit: its ``structure()`` and
``rebuild()``.  A module with children but no structure is refused by every
walker with :class:`~tabconv_np.errors.ConfigError`.

Chain items are ``(name, module)`` pairs; a name that is not one of the
container's children (e.g. the ReLU inside a basic block, ``"relu1"``) marks a
parameter-free step that the container applies itself.
"""
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Chain:
    """Children applied in order: ``items`` is a tuple of ``(name, module)``."""

    items: tuple


@dataclass(frozen=True)
class Residual:
    """``act(main(x) + shortcut(x))``.

    Attributes
    ----------
    main, shortcut : tuple of (name, module)
        The two branches, each a chain; an empty ``shortcut`` is the identity.
        Shortcut names are paths relative to the container (``"downsample.0"``).
    act : str or None
        Element-wise activation after the sum (``"relu"``).
    """

    main: tuple
    shortcut: tuple = ()
    act: str = "relu"


@dataclass(frozen=True)
class Dag:
    """A graph: ``nodes`` is a tuple of ``(name, inputs, module or None)`` in an order where
    every input is computed first; ``None`` is the element-wise sum of the inputs; a module
    with ``multi_input = True`` (a join: concatenation, product) takes the list of its inputs'
    values, any other module the value of its one input (:func:`node_input`);
    ``"input"`` names the graph's input; ``output`` names the returned node, or is a tuple
    of names for a graph with several outputs (:func:`outputs_of`)."""

    nodes: tuple
    output: str


def node_input(module, inputs, values):
    """What a graph node's ``module`` takes: the list of its inputs' values for a join
    (``module.multi_input``), else the value of its one input.  ``values`` maps node names
    to values (arrays, shapes, or pairs of arrays for the calibration walk)."""
    if getattr(module, "multi_input", False):
        return [values[v] for v in inputs]
    return values[inputs[0]]


def outputs_of(node):
    """The output names of a :class:`Dag`, as a tuple (one name for a single-output graph)."""
    return (node.output,) if isinstance(node.output, str) else tuple(node.output)


def join(prefix, name):
    """Dotted path ``prefix.name`` (``name`` alone at the top)."""
    return f"{prefix}.{name}" if prefix else name


def structure_of(module, path=""):
    """``module.structure()``; ConfigError for a module with children but no structure."""
    node = module.structure()
    if node is None and module.children:
        raise ConfigError(f"{path or 'the network'}: container {type(module).__name__} does not "
                          f"describe its structure (sequence, residual block or graph); "
                          f"it cannot be walked")
    return node


def branches(node):
    """The ``(name, module)`` items of a node in forward order of its leaves:
    a chain's items; a residual block's main branch then its shortcut; a graph's layer nodes."""
    if isinstance(node, Chain):
        return list(node.items)
    if isinstance(node, Residual):
        return list(node.main) + list(node.shortcut)
    return [(n, m) for n, _, m in node.nodes if m is not None]


def leaves(module, prefix=""):
    """``[(path, leaf module)]`` of every leaf below ``module`` in forward order.

    In a residual block the main branch comes before the shortcut.  Steps a
    container applies itself (names that are not children) are left out.
    """
    node = structure_of(module, prefix)
    if node is None:
        return [(prefix, module)]
    out = []
    for name, child in branches(node):
        if _is_child(module, name):
            out += leaves(child, join(prefix, name))
    return out


def _is_child(module, name):
    head, _, rest = name.partition(".")
    if head not in module.children:
        return False
    return not rest or _is_child(module.children[head], rest)


def map_leaves(module, fn, prefix=""):
    """A copy of ``module`` with every leaf replaced by ``fn(path, leaf)`` (containers rebuilt).

    ``fn`` returns the leaf itself to keep it.  Shortcut items of a residual
    block are mapped as the leaves they are.
    """
    node = structure_of(module, prefix)
    if node is None:
        return fn(prefix, module)

    def sub(name, m):
        return map_leaves(m, fn, join(prefix, name)) if _is_child(module, name) else m

    if isinstance(node, Chain):
        new = Chain(tuple((n, sub(n, m)) for n, m in node.items))
    elif isinstance(node, Residual):
        new = Residual(tuple((n, sub(n, m)) for n, m in node.main),
                       tuple((n, sub(n, m)) for n, m in node.shortcut), node.act)
    else:
        new = Dag(tuple((n, ins, sub(n, m) if m is not None else None) for n, ins, m in node.nodes),
                  node.output)
    return type(module).rebuild(new, module)
