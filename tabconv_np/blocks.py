"""Containers: ``Sequential``, the ResNet ``BasicBlock`` and ``Graph``.

Each describes itself by ``structure()`` (a :mod:`tabconv_np.structure`
node: a chain, a residual block, a graph) and is rebuilt from such a node by
``rebuild(node, old)``; every walker of the package goes through these two
methods, never through a container's private layout.
"""
import numpy as np

from .errors import ConfigError, ShapeError, TabConvError
from .layers import BatchNorm2d, Conv2d, ReLU
from .module import Module
from .reshapes import SubsamplePad
from .structure import Chain, Dag, Residual, node_input
from .validate import as_float, as_int

INPUT = "input"


class Sequential(Module):
    """Children applied in order; ``children`` is a list of ``[name, config]`` pairs in its config."""

    def __init__(self, children=()):
        super().__init__()
        for name, child in children:
            if not isinstance(child, Module):
                raise ConfigError(f"Sequential: child {name!r} is a {type(child).__name__}, not a layer")
            if str(name) in self.children or not str(name):
                raise ConfigError(f"Sequential: two children are named {str(name)!r} (or a name is empty)")
            self.children[str(name)] = child

    @classmethod
    def from_config(cls, cfg, build):
        try:
            return cls([(n, build(c)) for n, c in cfg.get("children", [])])
        except TabConvError:
            raise
        except (TypeError, ValueError, AttributeError):
            raise ConfigError("Sequential: 'children' must be a list of [name, layer config]") from None

    def config(self):
        return {"type": "Sequential", "children": [[n, c.config()] for n, c in self.children.items()]}

    def forward(self, x, layout):
        for child in self.children.values():
            x = child.forward(x, layout)
        return x

    def out_shape(self, in_shape):
        for child in self.children.values():
            in_shape = child.out_shape(in_shape)
        return in_shape

    def structure(self):
        return Chain(tuple(self.children.items()))

    @classmethod
    def rebuild(cls, node, old=None):
        return cls(node.items)


class BasicBlock(Module):
    """ResNet basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Children ``conv1, bn1, conv2, bn2`` and, when ``stride != 1`` or the width
    changes, ``downsample`` = Sequential(``0``: 1x1 conv with the stride, ``1``: BN)
    (``shortcut="conv"``, He et al.'s option B), or ``shortcut="pad"`` (option A,
    ResNet-20/32/56): ``downsample`` = :class:`~tabconv_np.reshapes.SubsamplePad`, the
    input subsampled by the stride with zero channels added, no parameters.
    A block whose BNs were folded (``fold_batchnorm``) has ``batchnorm=False``:
    no BN children, convs with bias.

    Structure: ``Residual(main=(conv1, bn1, relu1, conv2, bn2), shortcut=(downsample,))``
    where ``relu1`` is the block's own ReLU (not a child).
    """

    SHORTCUTS = ("conv", "pad")

    def __init__(self, in_planes, planes, stride=1, eps=1e-5, batchnorm=True, shortcut="conv"):
        super().__init__()
        if shortcut not in self.SHORTCUTS:
            raise ConfigError(f"BasicBlock: shortcut must be one of {self.SHORTCUTS}, got {shortcut!r}")
        self.shortcut = shortcut
        self.in_planes = as_int(in_planes, "BasicBlock: in_planes", 1)
        self.planes = as_int(planes, "BasicBlock: planes", 1)
        self.stride = as_int(stride, "BasicBlock: stride", 1)
        self.eps, self.batchnorm = as_float(eps, "BasicBlock: eps", positive=True), bool(batchnorm)
        c = self.children
        c["conv1"] = Conv2d(in_planes, planes, 3, stride, 1, bias=not batchnorm)
        if batchnorm:
            c["bn1"] = BatchNorm2d(planes, eps)
        c["conv2"] = Conv2d(planes, planes, 3, 1, 1, bias=not batchnorm)
        if batchnorm:
            c["bn2"] = BatchNorm2d(planes, eps)
        if (stride != 1 or in_planes != planes) and shortcut == "pad":
            if planes < in_planes:
                raise ConfigError(f"BasicBlock: a 'pad' shortcut cannot narrow {in_planes} channels "
                                  f"to {planes}")
            extra = planes - in_planes
            c["downsample"] = SubsamplePad(stride, extra // 2, extra - extra // 2)
        elif stride != 1 or in_planes != planes:
            ds = [("0", Conv2d(in_planes, planes, 1, stride, 0, bias=not batchnorm))]
            if batchnorm:
                ds.append(("1", BatchNorm2d(planes, eps)))
            c["downsample"] = Sequential(ds)

    def config(self):
        return {"type": "BasicBlock", "in_planes": self.in_planes, "planes": self.planes,
                "stride": self.stride, "eps": self.eps, "batchnorm": self.batchnorm,
                "shortcut": self.shortcut, "children": [[n, m.config()] for n, m in self.children.items()]}

    @classmethod
    def from_config(cls, cfg, build):
        block = cls(cfg["in_planes"], cfg["planes"], cfg.get("stride", 1), cfg.get("eps", 1e-5),
                    cfg.get("batchnorm", True), cfg.get("shortcut", "conv"))
        # children may have been replaced (e.g. by table layers): rebuild those from their configs
        seen = set()
        for n, c in cfg.get("children", []):
            if n in seen or n not in block.children:
                raise ConfigError(f"BasicBlock: child {n!r} is repeated or not one of "
                                  f"{list(block.children)}")
            seen.add(n)
            if block.children[n].config() != c:
                block.children[n] = build(c)
        return block

    def main_path(self):
        """The layers of the residual branch, in order."""
        return [m for _, m in self.structure().main]

    def structure(self):
        c = self.children
        main = [(n, c[n]) for n in ("conv1", "bn1") if n in c] + [("relu1", ReLU())]
        main += [(n, c[n]) for n in ("conv2", "bn2") if n in c]
        shortcut = (("downsample", c["downsample"]),) if "downsample" in c else ()
        return Residual(tuple(main), shortcut, "relu")

    @classmethod
    def rebuild(cls, node, old):
        """A block like ``old`` with the children of ``node`` (BNs may have been folded away)."""
        items = dict(node.main)
        batchnorm = "bn1" in items
        block = cls(old.in_planes, old.planes, old.stride, old.eps, batchnorm=batchnorm,
                    shortcut=old.shortcut)
        block.children.clear()
        for n in ("conv1", "bn1", "conv2", "bn2"):
            if n in items:
                block.children[n] = items[n]
        for n, m in node.shortcut:
            block.children[n] = m
        return block

    def forward(self, x, layout):
        y = x
        for m in self.main_path():
            y = m.forward(y, layout)
        s = self.children["downsample"].forward(x, layout) if "downsample" in self.children else x
        y += s
        return np.maximum(y, np.float32(0), out=y)

    def out_shape(self, in_shape):
        return self.children["conv2"].out_shape(self.children["conv1"].out_shape(in_shape))


class Graph(Module):
    """Layers wired as a directed acyclic graph, run in topological order.

    For networks that are not a chain of ``Sequential`` layers and ResNet
    ``BasicBlock``\\ s (the importers build those first, so a ``Graph`` appears
    only when nothing simpler fits): residual graphs, branches joined by a
    concatenation or a product, several outputs.

    Parameters
    ----------
    nodes : list of ``[name, inputs, layer]``
        In an order where every input is computed before it is used.  ``name``
        names the node's output (and its child module); ``inputs`` lists node
        names, ``"input"`` being the graph's input; ``layer`` is a Module
        applied to the single input, a join (a Module with ``multi_input =
        True``, e.g. :class:`~tabconv_np.joins.Concat`) applied to the list of
        the inputs, or ``None`` for the element-wise sum of the inputs.
    output : str or list of str, optional
        The node whose value the graph returns (default the last one), or the
        nodes of a graph with several outputs: ``forward`` then returns a tuple
        of them in this order, and ``out_shape`` the first one's shape
        (:meth:`out_shapes` all of them).

    ``forward`` keeps a value only until its last reader has run.

    Config: ``{"type": "Graph", "nodes": [[name, inputs, config or null], ...],
    "output": name or [names]}``.  Parameters are the children's, named ``<node>.<param>``.
    """

    def __init__(self, nodes=(), output=None):
        super().__init__()
        self.nodes = []
        seen = {INPUT}
        for name, inputs, layer in nodes:
            name, inputs = str(name), [str(i) for i in inputs]
            if name in seen or "." in name:
                raise ConfigError(f"Graph: node name {name!r} is repeated or contains a dot")
            unknown = [i for i in inputs if i not in seen]
            if unknown or not inputs:
                raise ConfigError(f"Graph: node {name!r} takes {inputs}, of which {unknown} are not "
                                  f"computed before it")
            if layer is None:
                if len(inputs) < 2:
                    raise ConfigError(f"Graph: sum node {name!r} needs at least two inputs")
            else:
                if not isinstance(layer, Module):
                    raise ConfigError(f"Graph: node {name!r} holds a {type(layer).__name__}, not a layer")
                if len(inputs) != 1 and not getattr(layer, "multi_input", False):
                    raise ConfigError(f"Graph: layer node {name!r} takes exactly one input, got {inputs}")
                self.children[name] = layer
            self.nodes.append((name, inputs))
            seen.add(name)
        if not self.nodes:
            raise ConfigError("Graph: no nodes")
        if output is None:
            output = self.nodes[-1][0]
        outs = [str(output)] if isinstance(output, str) else [str(o) for o in output]
        if not outs or len(set(outs)) != len(outs) or any(o not in seen or o == INPUT for o in outs):
            raise ConfigError(f"Graph: output {output!r} must name distinct nodes")
        self.outputs = tuple(outs)
        #: the first output (the one a single-output walker reads)
        self.output = outs[0]
        # when each value can be dropped: after its last use
        last = {}
        for i, (_, inputs) in enumerate(self.nodes):
            for v in inputs:
                last[v] = i
        self._free = [sorted({v for v in inputs if last[v] == i and v not in self.outputs})
                      for i, (_, inputs) in enumerate(self.nodes)]

    @classmethod
    def from_config(cls, cfg, build):
        try:
            nodes = [(n, ins, build(c) if c is not None else None) for n, ins, c in cfg.get("nodes", [])]
        except TabConvError:
            raise
        except (TypeError, ValueError):
            raise ConfigError("Graph: 'nodes' must be a list of [name, inputs, layer config]") from None
        return cls(nodes, cfg.get("output"))

    def _output_value(self):
        return self.output if len(self.outputs) == 1 else list(self.outputs)

    def config(self):
        return {"type": "Graph",
                "nodes": [[n, list(ins), self.children[n].config() if n in self.children else None]
                          for n, ins in self.nodes],
                "output": self._output_value()}

    def structure(self):
        out = self.output if len(self.outputs) == 1 else self.outputs
        return Dag(tuple((n, tuple(ins), self.children.get(n)) for n, ins in self.nodes), out)

    @classmethod
    def rebuild(cls, node, old=None):
        return cls([(n, list(ins), m) for n, ins, m in node.nodes], node.output)

    def forward(self, x, layout):
        vals = {INPUT: x}
        for (name, inputs), free in zip(self.nodes, self._free):
            if name in self.children:
                child = self.children[name]
                y = child.forward(node_input(child, inputs, vals), layout)
            else:
                y = vals[inputs[0]] + vals[inputs[1]]
                for v in inputs[2:]:
                    y += vals[v]
            vals[name] = y
            for v in free:
                del vals[v]
        if len(self.outputs) == 1:
            return vals[self.output]
        return tuple(vals[o] for o in self.outputs)

    def shapes(self, in_shape):
        """``{node name: per-image output shape}`` (``"input"`` included)."""
        shapes = {INPUT: tuple(in_shape)}
        for name, inputs in self.nodes:
            if name in self.children:
                child = self.children[name]
                shapes[name] = tuple(child.out_shape(node_input(child, inputs, shapes)))
            else:
                got = {shapes[v] for v in inputs}
                if len(got) != 1:
                    raise ShapeError(f"Graph: sum node {name!r} adds differently shaped inputs "
                                     f"{[shapes[v] for v in inputs]}")
                shapes[name] = shapes[inputs[0]]
        return shapes

    def out_shape(self, in_shape):
        return self.shapes(in_shape)[self.output]

    def out_shapes(self, in_shape):
        """The per-image shapes of every output, in order."""
        shapes = self.shapes(in_shape)
        return [shapes[o] for o in self.outputs]

    def __repr__(self):
        lines = ["Graph("]
        for n, inputs in self.nodes:
            what = repr(self.children[n]).replace("\n", "\n  ") if n in self.children else "Add"
            lines.append(f"  ({n}) <- {', '.join(inputs)}: {what}")
        if len(self.outputs) > 1:
            lines.append(f"  outputs: {', '.join(self.outputs)}")
        lines.append(")")
        return "\n".join(lines)
