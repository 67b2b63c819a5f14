"""Switches: the units of a network that are converted as a whole or kept exact.

At the TabConv authors' granularity: a residual block (its convolutions and
its shortcut convolution together) is one switch, every other convolution or
linear layer is one switch (10 switches for ResNet-18, 18 for ResNet-34, 9
for NIN, 5 for LeNet).  Found through the structure protocol, so a graph's
layers are switches like a chain's.
"""
from dataclasses import dataclass

from ..layers import Conv2d, Linear
from ..structure import Residual, branches, join, leaves, structure_of

#: Leaf layer types that a conversion method may replace.
WEIGHT_LAYERS = (Conv2d, Linear)


@dataclass(frozen=True)
class Switch:
    """One unit that is all converted or all exact.

    Attributes
    ----------
    index : int
    name : str
        Dotted path of its module in the network body (``conv1``, ``layer1.0``, ``fc``).
    module : Module
        The (BN-folded) module.
    leaves : list of str
        Dotted paths of its Conv2d / Linear layers, in forward order.
    """

    index: int
    name: str
    module: object
    leaves: list

    def __repr__(self):
        return f"Switch({self.index}, {self.name!r}, leaves={self.leaves})"


def find_switches(body):
    """The switches of a network body, in forward order (see the module docstring).

    Parameters
    ----------
    body : Module
        Usually ``Network.body``.

    Returns
    -------
    list of Switch

    Raises
    ------
    ConfigError
        A container in ``body`` does not describe its structure.
    """
    found = []

    def walk(m, path):
        node = structure_of(m, path)
        if isinstance(node, Residual) or (node is None and isinstance(m, WEIGHT_LAYERS)):
            found.append((path, m))
        elif node is not None:
            for n, child in branches(node):
                if n in m.children:
                    walk(child, join(path, n))

    walk(body, "")
    return [Switch(i, name, m, [p for p, leaf in leaves(m, name) if isinstance(leaf, WEIGHT_LAYERS)])
            for i, (name, m) in enumerate(found)]
