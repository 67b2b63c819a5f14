"""Layers that combine tensors: concatenation, element-wise products and quotients, and the
per-channel scale-and-shift an imported graph's constant ``Mul``/``Add`` become.

A *join* (``multi_input = True``) sits in a :class:`~tabconv_np.blocks.Graph`
node with several inputs: ``forward`` takes the list of their values,
``out_shape`` and ``cost`` the list of their per-image shapes
(:func:`tabconv_np.structure.node_input`).

Counting: ``Mul``/``Div`` count one ``mults`` per output element, ``Sub``
one ``adds``; ``Scale`` one ``mults`` and one ``adds`` per element;
``Concat`` copies and counts nothing.
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .module import Module
from .validate import as_int, batch_axis, channel_axis

_OPS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}


def _shapes(in_shapes, who):
    shapes = [tuple(int(v) for v in s) for s in in_shapes]
    if len(shapes) < 2 or len({len(s) for s in shapes}) != 1:
        raise ShapeError(f"{who}: needs two or more inputs of one rank, got shapes {shapes}")
    return shapes


class Concat(Module):
    """Concatenation of the inputs along per-image axis ``axis`` (0: channels), PyTorch order."""

    multi_input = True

    def __init__(self, axis=0):
        super().__init__()
        self.axis = as_int(axis, "Concat: axis", 0)

    def config(self):
        return {"type": "Concat", "axis": self.axis}

    def forward(self, xs, layout):
        return np.concatenate(xs, axis=batch_axis(self.axis, xs[0].ndim, layout))

    def out_shape(self, in_shapes):
        shapes = _shapes(in_shapes, "Concat")
        if self.axis >= len(shapes[0]) or len({s[:self.axis] + s[self.axis + 1:] for s in shapes}) != 1:
            raise ShapeError(f"Concat: cannot join shapes {shapes} along axis {self.axis}")
        out = list(shapes[0])
        out[self.axis] = sum(s[self.axis] for s in shapes)
        return tuple(out)

    def cost(self, in_shapes):
        return {}


class Binary(Module):
    """``op(a, b)`` element-wise with NumPy broadcasting of per-image shapes (``(C, H, W)`` with
    ``(C, 1, 1)``: a squeeze-excite gate); ``op`` one of add, sub, mul, div."""

    multi_input = True

    def __init__(self, op="mul"):
        super().__init__()
        if op not in _OPS:
            raise ConfigError(f"Binary: op must be one of {sorted(_OPS)}, got {op!r}")
        self.op = op

    def config(self):
        return {"type": "Binary", "op": self.op}

    def forward(self, xs, layout):
        a, b = xs
        return _OPS[self.op](a, b, dtype=np.float32)

    def out_shape(self, in_shapes):
        shapes = _shapes(in_shapes, f"Binary({self.op})")
        if len(shapes) != 2:
            raise ShapeError(f"Binary({self.op}): takes two inputs, got {len(shapes)}")
        try:
            return tuple(np.broadcast_shapes(*shapes))
        except ValueError:
            raise ShapeError(f"Binary({self.op}): shapes {shapes} do not broadcast") from None

    def cost(self, in_shapes):
        n = int(np.prod(self.out_shape(in_shapes)))
        return {"adds" if self.op in ("add", "sub") else "mults": n}


class Scale(Module):
    """``x * weight[c] + bias[c]`` per channel (or per feature of a flat tensor); ``weight`` and
    ``bias`` of shape ``(channels,)``, ``channels`` 1 meaning one value for all."""

    def __init__(self, channels=1):
        super().__init__()
        n = as_int(channels, "Scale: channels", 1)
        self.params["weight"] = np.ones(n, np.float32)
        self.params["bias"] = np.zeros(n, np.float32)

    def config(self):
        return {"type": "Scale", "channels": int(self.params["weight"].size)}

    def forward(self, x, layout):
        w, b = self.params["weight"], self.params["bias"]
        if w.size > 1:
            shape = [1] * x.ndim
            shape[channel_axis(layout) if x.ndim == 4 else 1] = w.size
            w, b = w.reshape(shape), b.reshape(shape)
        y = x * w
        y += b
        return y

    def out_shape(self, in_shape):
        n = self.params["weight"].size
        if n > 1 and (not in_shape or in_shape[0] != n):
            raise ShapeError(f"Scale: {n} channels for input of shape {tuple(in_shape)}")
        return tuple(in_shape)

    def cost(self, in_shape):
        n = int(np.prod(in_shape))
        return {"mults": n, "adds": n}
