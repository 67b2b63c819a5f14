"""Element-wise activations beyond ReLU and Clip, and softmax: the ones imported vision graphs use.

LeakyReLU, PReLU (one slope per channel or one for all), Sigmoid, Tanh,
HardSigmoid (``clip(alpha*x + beta, 0, 1)``, ONNX's form), HardSwish
(``x * hardsigmoid(x)`` with alpha 1/6, beta 1/2) and Softmax over one
per-image axis.  Each works in either layout and counts its work as
``act_ops``: one per element for a comparison or a table-free function
evaluation (sigmoid, tanh and exp are counted as one op each -- a convention,
named here), plus one per element for each extra multiply or add.
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .module import Module
from .validate import as_float, as_int, batch_axis, channel_axis


def _n(in_shape):
    return int(np.prod(in_shape))


class LeakyReLU(Module):
    """``x if x >= 0 else alpha * x``."""

    def __init__(self, alpha=0.01):
        super().__init__()
        self.alpha = as_float(alpha, "LeakyReLU: alpha")

    def config(self):
        return {"type": "LeakyReLU", "alpha": self.alpha}

    def forward(self, x, layout):
        return np.where(x >= 0, x, x * np.float32(self.alpha)).astype(np.float32, copy=False)

    def cost(self, in_shape):
        return {"act_ops": 2 * _n(in_shape)}


class PReLU(Module):
    """``x if x >= 0 else weight[c] * x``; ``weight`` (num_parameters,): one slope per channel
    (``num_parameters`` = C) or one for all (1), as in ``torch.nn.PReLU``."""

    def __init__(self, num_parameters=1):
        super().__init__()
        n = as_int(num_parameters, "PReLU: num_parameters", 1)
        self.params["weight"] = np.full(n, 0.25, np.float32)

    def config(self):
        return {"type": "PReLU", "num_parameters": int(self.params["weight"].size)}

    def forward(self, x, layout):
        w = self.params["weight"]
        if w.size > 1:
            shape = [1] * x.ndim
            axis = channel_axis(layout) if x.ndim == 4 else 1
            if x.shape[axis] != w.size:
                raise ShapeError(f"PReLU: {w.size} slopes for input of shape {x.shape} ({layout})")
            shape[axis] = w.size
            w = w.reshape(shape)
        return np.where(x >= 0, x, x * w).astype(np.float32, copy=False)

    def out_shape(self, in_shape):
        n = self.params["weight"].size
        if n > 1 and in_shape[0] != n:
            raise ShapeError(f"PReLU: {n} slopes for input of shape {tuple(in_shape)}")
        return tuple(in_shape)

    def cost(self, in_shape):
        return {"act_ops": 2 * _n(in_shape)}


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``."""

    def forward(self, x, layout):
        out = np.negative(x, dtype=np.float32)
        np.exp(out, out=out)
        out += np.float32(1)
        return np.reciprocal(out, out=out)

    def cost(self, in_shape):
        return {"act_ops": 3 * _n(in_shape)}


class Tanh(Module):
    def forward(self, x, layout):
        return np.tanh(x, dtype=np.float32)

    def cost(self, in_shape):
        return {"act_ops": _n(in_shape)}


class HardSigmoid(Module):
    """``clip(alpha * x + beta, 0, 1)`` (ONNX defaults alpha 0.2, beta 0.5; torch's is 1/6, 1/2)."""

    def __init__(self, alpha=0.2, beta=0.5):
        super().__init__()
        self.alpha, self.beta = as_float(alpha, "HardSigmoid: alpha"), as_float(beta, "HardSigmoid: beta")

    def config(self):
        return {"type": "HardSigmoid", "alpha": self.alpha, "beta": self.beta}

    def forward(self, x, layout):
        y = x * np.float32(self.alpha)
        y += np.float32(self.beta)
        return np.clip(y, np.float32(0), np.float32(1), out=y)

    def cost(self, in_shape):
        return {"act_ops": 4 * _n(in_shape)}


class HardSwish(Module):
    """``x * clip(x / 6 + 1/2, 0, 1)`` (ONNX HardSwish, ``torch.nn.Hardswish``)."""

    def forward(self, x, layout):
        y = x * np.float32(1 / 6)
        y += np.float32(0.5)
        np.clip(y, np.float32(0), np.float32(1), out=y)
        y *= x
        return y

    def cost(self, in_shape):
        return {"act_ops": 5 * _n(in_shape)}


class Softmax(Module):
    """Softmax over per-image axis ``axis`` (0: channels of an image or the features of a flat
    tensor), in PyTorch's axis order whatever the layout."""

    def __init__(self, axis=0):
        super().__init__()
        self.axis = as_int(axis, "Softmax: axis", 0)

    def config(self):
        return {"type": "Softmax", "axis": self.axis}

    def forward(self, x, layout):
        if self.axis >= x.ndim - 1:
            raise ShapeError(f"Softmax: axis {self.axis} for a batch of shape {x.shape}")
        ax = batch_axis(self.axis, x.ndim, layout)
        y = x - x.max(axis=ax, keepdims=True)
        np.exp(y, out=y)
        y /= y.sum(axis=ax, keepdims=True)
        return y.astype(np.float32, copy=False)

    def out_shape(self, in_shape):
        if self.axis >= len(in_shape):
            raise ConfigError(f"Softmax: axis {self.axis} for per-image shape {tuple(in_shape)}")
        return tuple(in_shape)

    def cost(self, in_shape):
        return {"act_ops": 4 * _n(in_shape)}
