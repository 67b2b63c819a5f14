"""Layer types that imported models may need beyond the bundled ones.

* :class:`Graph` -- a small directed acyclic graph of layers and element-wise
  sums, for residual networks that are not made of ResNet ``BasicBlock``\\ s
  (the importers turn those into ``BasicBlock`` and chains into ``Sequential``
  first, so a ``Graph`` appears only when nothing simpler fits);
* :class:`Clip` -- ``min(max(x, lo), hi)``, e.g. ReLU6 (ONNX ``Clip(0, 6)``,
  Keras ``ReLU(max_value=6)``).

Both register themselves with :func:`tabconv_np.module.register`, so their
configs round-trip through :func:`tabconv_np.io.save` / :func:`~tabconv_np.io.load`.
"""
import numpy as np

from ..errors import ConfigError, ShapeError
from ..module import Module, from_config, register

INPUT = "input"


@register
class Clip(Module):
    """Element-wise clamp to ``[min, max]`` (``max`` None: no upper bound)."""

    def __init__(self, min=0.0, max=6.0):  # noqa: A002 - the ONNX/torch names
        super().__init__()
        self.min = float(min)
        self.max = None if max is None else float(max)
        if self.max is not None and self.max < self.min:
            raise ConfigError(f"Clip: max {max} is below min {min}")

    def config(self):
        return {"type": "Clip", "min": self.min, "max": self.max}

    def forward(self, x, layout):
        hi = None if self.max is None else np.float32(self.max)
        return np.clip(x, np.float32(self.min), hi).astype(np.float32, copy=False)

    def count(self, in_shape, name):
        from ..ops import row
        n = int(np.prod(in_shape))
        return [row(name, self, in_shape, in_shape, act_ops=n if self.max is None else 2 * n)]


@register
class Graph(Module):
    """Layers wired as a directed acyclic graph.

    Parameters
    ----------
    nodes : list of ``[name, inputs, layer]``
        In an order where every input is computed before it is used.  ``name``
        names the node's output (and its child module); ``inputs`` lists node
        names, ``"input"`` being the graph's input; ``layer`` is a Module (or
        its config) applied to the single input, or ``None`` for the
        element-wise sum of the inputs.
    output : str, optional
        The node whose value the graph returns; default the last one.

    Config: ``{"type": "Graph", "nodes": [[name, inputs, config or null], ...],
    "output": name}``.  Parameters are the children's, named ``<node>.<param>``.
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
                if len(inputs) != 1:
                    raise ConfigError(f"Graph: layer node {name!r} takes exactly one input, got {inputs}")
                self.children[name] = layer if isinstance(layer, Module) else from_config(layer)
            self.nodes.append((name, inputs))
            seen.add(name)
        if not self.nodes:
            raise ConfigError("Graph: no nodes")
        self.output = str(output) if output is not None else self.nodes[-1][0]
        if self.output not in seen:
            raise ConfigError(f"Graph: output {self.output!r} is not a node")
        # when each value can be dropped: after its last use
        last = {}
        for i, (_, inputs) in enumerate(self.nodes):
            for v in inputs:
                last[v] = i
        self._free = [[v for v in inputs if last[v] == i and v != self.output]
                      for i, (_, inputs) in enumerate(self.nodes)]

    @classmethod
    def from_config(cls, cfg):
        try:
            nodes = [(n, ins, c) for n, ins, c in cfg.get("nodes", [])]
        except (TypeError, ValueError):
            raise ConfigError("Graph: 'nodes' must be a list of [name, inputs, layer config]") from None
        return cls(nodes, cfg.get("output"))

    def config(self):
        return {"type": "Graph",
                "nodes": [[n, list(ins), self.children[n].config() if n in self.children else None]
                          for n, ins in self.nodes],
                "output": self.output}

    def forward(self, x, layout):
        vals = {INPUT: x}
        for (name, inputs), free in zip(self.nodes, self._free):
            if name in self.children:
                y = self.children[name].forward(vals[inputs[0]], layout)
            else:
                y = vals[inputs[0]] + vals[inputs[1]]
                for v in inputs[2:]:
                    y += vals[v]
            vals[name] = y
            for v in free:
                del vals[v]
        return vals[self.output]

    def _shapes(self, in_shape):
        shapes = {INPUT: tuple(in_shape)}
        for name, inputs in self.nodes:
            if name in self.children:
                shapes[name] = tuple(self.children[name].out_shape(shapes[inputs[0]]))
            else:
                got = {shapes[v] for v in inputs}
                if len(got) != 1:
                    raise ShapeError(f"Graph: sum node {name!r} adds differently shaped inputs "
                                     f"{[shapes[v] for v in inputs]}")
                shapes[name] = shapes[inputs[0]]
        return shapes

    def out_shape(self, in_shape):
        return self._shapes(in_shape)[self.output]

    def count(self, in_shape, name):
        from ..ops import row
        shapes, rows = self._shapes(in_shape), []
        for n, inputs in self.nodes:
            full = f"{name}.{n}" if name else n
            if n in self.children:
                rows += self.children[n].count(shapes[inputs[0]], full)
            else:
                s = shapes[n]
                rows.append(row(full, self, s, s, type="Add",
                                residual_adds=(len(inputs) - 1) * int(np.prod(s))))
        return rows

    def __repr__(self):
        lines = ["Graph("]
        for n, inputs in self.nodes:
            what = repr(self.children[n]).replace("\n", "\n  ") if n in self.children else "Add"
            lines.append(f"  ({n}) <- {', '.join(inputs)}: {what}")
        lines.append(")")
        return "\n".join(lines)

