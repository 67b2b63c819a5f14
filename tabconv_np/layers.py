"""Leaf inference layers: Conv2d, BatchNorm2d, ReLU, Clip, pooling, LRN, Linear, Flatten, Dropout.

The containers (Sequential, the ResNet BasicBlock, Graph) are in
:mod:`tabconv_np.blocks`; the table layers in :mod:`tabconv_np.tables`.

Every layer works in either layout, ``"NCHW"`` or ``"NHWC"``: the network picks
one and converts its input once, at its edge.  Parameters follow PyTorch's
names and shapes (conv weight OIHW, linear weight ``(out, in)``), so a torch
``state_dict`` maps one to one.
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .conv.strassen import strassen_cost
from .conv.winograd import winograd_cost
from .functional import WINOGRAD_TILES, conv2d, winograd_applies
from .geometry import attach_geometry
from .module import Module
from .validate import as_float, as_int, as_pair, channel_axis, check_parameters

_SPATIAL = {"NCHW": (2, 3), "NHWC": (1, 2)}


def _check_channels(layer, x, layout, expected):
    c = x.shape[channel_axis(layout)] if x.ndim == 4 else None
    if x.ndim != 4 or c != expected:
        raise ShapeError(f"{layer}: expected a 4-d {layout} batch with {expected} channels, "
                         f"got shape {x.shape}")


class Conv2d(Module):
    """2-d convolution (cross-correlation, as in PyTorch).

    Parameters: ``weight`` (C_out, C_in/groups, kh, kw), ``bias`` (C_out,) if ``bias``.
    ``method`` picks the kernel: naive | im2col | mec | direct | winograd | winograd4 |
    strassen | auto (see :func:`tabconv_np.functional.conv2d`); :meth:`cost` counts what it does.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, method="auto"):
        super().__init__()
        attach_geometry(self, "Conv2d", in_channels, out_channels, kernel_size, stride, padding,
                        dilation, groups)
        self.method = method
        self.params["weight"] = np.zeros(
            (self.out_channels, self.in_channels // self.groups) + self.kernel_size, np.float32)
        if bias:
            self.params["bias"] = np.zeros(self.out_channels, np.float32)

    def config(self):
        return {"type": "Conv2d", **self.geometry.config(), "groups": self.groups,
                "bias": "bias" in self.params, "method": self.method}

    def forward(self, x, layout):
        return conv2d(x, self.params["weight"], self.params.get("bias"), self.stride, self.padding,
                      self.dilation, self.groups, method=self.method, layout=layout)

    def out_shape(self, in_shape):
        return self.geometry.out_shape(in_shape, "Conv2d")

    def cost(self, in_shape):
        """Per-image counts; Winograd (where it applies) and Strassen report multiplications and
        additions apart; a method that does not apply counts as im2col."""
        C_out, Ho, Wo = self.out_shape(in_shape)
        n_out = C_out * Ho * Wo
        ws = self.geometry.workspace_bytes(in_shape)
        out = {"bias_adds": n_out if "bias" in self.params else 0,
               "im2col_bytes": ws["im2col"], "mec_bytes": ws["mec"]}
        if self.method in WINOGRAD_TILES and winograd_applies(self.kernel_size, self.stride, self.dilation,
                                                              self.groups, self.in_channels):
            out.update(winograd_cost(self.in_channels, C_out, Ho, Wo, WINOGRAD_TILES[self.method],
                                     self.groups))
        elif self.method == "strassen":
            # per image: Strassen recurses on the rows of the whole batch it is given
            mults, adds = strassen_cost(Ho * Wo, self.geometry.D, C_out // self.groups)
            out.update(mults=self.groups * mults, adds=self.groups * adds)
        else:
            out["macs"] = n_out * self.geometry.D
        return out


class BatchNorm2d(Module):
    """Inference batch norm: ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``."""

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        n = as_int(num_features, "BatchNorm2d: num_features", 1)
        check_parameters(4 * n, "BatchNorm2d")
        self.num_features, self.eps = n, as_float(eps, "BatchNorm2d: eps", positive=True)
        self.params["weight"] = np.ones(n, np.float32)
        self.params["bias"] = np.zeros(n, np.float32)
        self.params["running_mean"] = np.zeros(n, np.float32)
        self.params["running_var"] = np.ones(n, np.float32)

    def config(self):
        return {"type": "BatchNorm2d", "num_features": self.num_features, "eps": self.eps}

    def scale_shift(self):
        """``(scale, shift)`` with ``y = x * scale + shift`` per channel, float32."""
        p = self.params
        scale = p["weight"] / np.sqrt(p["running_var"].astype(np.float64) + self.eps)
        shift = p["bias"] - p["running_mean"] * scale
        return scale.astype(np.float32), shift.astype(np.float32)

    def forward(self, x, layout):
        _check_channels("BatchNorm2d", x, layout, self.num_features)
        scale, shift = self.scale_shift()
        shape = (1, -1, 1, 1) if layout == "NCHW" else (1, 1, 1, -1)
        return x * scale.reshape(shape) + shift.reshape(shape)

    def cost(self, in_shape):
        return {"bn_ops": 2 * int(np.prod(in_shape))}


def bad_values(module):
    """``(parameter name, what is wrong)`` for each loaded value outside its domain
    (a batch norm's negative running variance), for the loaders to refuse."""
    for name, m in module.modules():
        if isinstance(m, BatchNorm2d) and (m.params["running_var"] < 0).any():
            yield f"{name}.running_var" if name else "running_var", "has negative values (a variance)"


class ReLU(Module):
    def forward(self, x, layout):
        return np.maximum(x, np.float32(0))

    def cost(self, in_shape):
        return {"act_ops": int(np.prod(in_shape))}


class Clip(Module):
    """Element-wise clamp to ``[min, max]`` (``max`` None: no upper bound), e.g. ReLU6
    (ONNX ``Clip(0, 6)``, Keras ``ReLU(max_value=6)``)."""

    def __init__(self, min=0.0, max=6.0):  # noqa: A002 - the ONNX/torch names
        super().__init__()
        self.min = as_float(min, "Clip: min")
        self.max = None if max is None else as_float(max, "Clip: max")
        if self.max is not None and self.max < self.min:
            raise ConfigError(f"Clip: max {max} is below min {min}")

    def config(self):
        return {"type": "Clip", "min": self.min, "max": self.max}

    def forward(self, x, layout):
        hi = None if self.max is None else np.float32(self.max)
        return np.clip(x, np.float32(self.min), hi).astype(np.float32, copy=False)

    def cost(self, in_shape):
        n = int(np.prod(in_shape))
        return {"act_ops": n if self.max is None else 2 * n}


class Dropout(Module):
    """Identity at inference; kept so that imported layer lists line up."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = as_float(p, "Dropout: p", 0)

    def config(self):
        return {"type": "Dropout", "p": self.p}

    def forward(self, x, layout):
        return x

    def cost(self, in_shape):
        return {}


class _Pool2d(Module):
    """Shared windowing of MaxPool2d and AvgPool2d.

    ``padding``: an int, ``(ph, pw)`` or ``(top, bottom, left, right)`` (each
    below the kernel size, as ONNX requires); ``ceil_mode``: the output size rounds up (ONNX and
    PyTorch's rule: a last window that would start in the bottom/right padding
    is dropped), the extra windows reading past the input as padding.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = as_pair(kernel_size, f"{name}: kernel_size")
        self.stride = as_pair(stride if stride is not None else kernel_size, f"{name}: stride")
        if isinstance(padding, (list, tuple)) and len(padding) == 4:
            t, b, l, r = (as_int(p, f"{name}: padding", 0) for p in padding)
        else:
            (t, l), b, r = as_pair(padding, f"{name}: padding", 0), None, None
            b, r = t, l
        self.pads = (t, b, l, r)
        self.padding = (t, l) if (t, l) == (b, r) else self.pads
        self.ceil_mode = bool(ceil_mode)
        if any(p >= k for p, k in zip(self.pads, np.repeat(self.kernel_size, 2))):
            raise ConfigError(f"{name}: padding {self.padding} must be below the kernel "
                              f"{self.kernel_size} (every window holds an input pixel)")

    def config(self):
        cfg = {"type": type(self).__name__, "kernel_size": list(self.kernel_size),
               "stride": list(self.stride), "padding": list(self.padding)}
        if self.ceil_mode:
            cfg["ceil_mode"] = True
        return cfg

    def _sizes(self, h, w):
        """Output size and the extra bottom/right padding the ceil mode reads."""
        out, extra = [], []
        for n, k, s, p0, p1 in zip((h, w), self.kernel_size, self.stride, self.pads[::2], self.pads[1::2]):
            span = n + p0 + p1 - k
            if span < 0:
                raise ShapeError(f"{type(self).__name__}: input {h}x{w} is smaller than the "
                                 f"kernel {self.kernel_size}")
            o = (-(-span // s) if self.ceil_mode else span // s) + 1
            if self.ceil_mode and (o - 1) * s >= n + p0:
                o -= 1
            out.append(o)
            extra.append(max((o - 1) * s + k - (n + p0 + p1), 0))
        return tuple(out), tuple(extra)

    def out_shape(self, in_shape):
        c, h, w = in_shape
        return (c,) + self._sizes(h, w)[0]

    def _windows(self, x, layout, fill, extra_fill=None):
        """View of shape (N, C, Ho, Wo, kh, kw) or (N, Ho, Wo, C, kh, kw) over the padded input
        (``extra_fill``: the value of the ceil mode's extra padding, default ``fill``)."""
        if x.ndim != 4:
            raise ShapeError(f"{type(self).__name__}: expected a 4-d {layout} batch, got {x.shape}")
        ah, aw = _SPATIAL[layout]
        (sh, sw), (t, b, l, r) = self.stride, self.pads
        (eh, ew) = self._sizes(x.shape[ah], x.shape[aw])[1]
        if t or b or l or r:
            pads = [(0, 0)] * 4
            pads[ah], pads[aw] = (t, b), (l, r)
            x = np.pad(x, pads, constant_values=fill)
        if eh or ew:
            pads = [(0, 0)] * 4
            pads[ah], pads[aw] = (0, eh), (0, ew)
            x = np.pad(x, pads, constant_values=fill if extra_fill is None else extra_fill)
        win = np.lib.stride_tricks.sliding_window_view(x, self.kernel_size, axis=(ah, aw))
        sl = [slice(None)] * 4
        sl[ah], sl[aw] = slice(None, None, sh), slice(None, None, sw)
        return win[tuple(sl)]


class MaxPool2d(_Pool2d):
    def forward(self, x, layout):
        return np.ascontiguousarray(self._windows(x, layout, -np.inf).max(axis=(-2, -1)))

    def cost(self, in_shape):
        kh, kw = self.kernel_size
        return {"pool_ops": int(np.prod(self.out_shape(in_shape))) * (kh * kw - 1)}


class AvgPool2d(_Pool2d):
    """Average pooling; zero padding counts in the average (PyTorch's default) unless
    ``count_include_pad`` is false.  The ceil mode's extra windows never count (PyTorch's rule)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def config(self):
        cfg = super().config()
        if not self.count_include_pad:
            cfg["count_include_pad"] = False
        return cfg

    def forward(self, x, layout):
        kh, kw = self.kernel_size
        simple = self.count_include_pad and not any(self._sizes(*x.shape[1:3] if layout == "NHWC"
                                                                 else x.shape[2:4])[1])
        if simple:
            return np.ascontiguousarray(self._windows(x, layout, 0.0).mean(axis=(-2, -1), dtype=np.float32))
        total = self._windows(x, layout, 0.0).sum(axis=(-2, -1), dtype=np.float32)
        ah, aw = _SPATIAL[layout]
        ones = np.ones((1, 1, x.shape[ah], x.shape[aw]), np.float32)
        count = self._windows(ones, "NCHW", 1.0 if self.count_include_pad else 0.0, 0.0)
        count = count.sum(axis=(-2, -1))[0, 0]
        count = count[None, None] if layout == "NCHW" else count[None, :, :, None]
        return np.ascontiguousarray(total / count, dtype=np.float32)

    def cost(self, in_shape):
        kh, kw = self.kernel_size
        return {"pool_ops": int(np.prod(self.out_shape(in_shape))) * kh * kw}


class GlobalAvgPool2d(Module):
    """Mean over the spatial axes, keeping them as 1x1 (``AdaptiveAvgPool2d(1)``)."""

    def forward(self, x, layout):
        return x.mean(axis=_SPATIAL[layout], keepdims=True, dtype=np.float32)

    def out_shape(self, in_shape):
        return (in_shape[0], 1, 1)

    def cost(self, in_shape):
        return {"pool_ops": int(np.prod(in_shape))}


class GlobalMaxPool2d(GlobalAvgPool2d):
    """Maximum over the spatial axes, keeping them as 1x1 (``AdaptiveMaxPool2d(1)``)."""

    def forward(self, x, layout):
        return x.max(axis=_SPATIAL[layout], keepdims=True)


class LRN(Module):
    """Local response normalisation across channels (ONNX ``LRN``, ``torch.nn.LocalResponseNorm``):
    ``x / (bias + alpha / size * sum of x^2 over the size channels around c) ** beta``.

    Counted as ``act_ops``: ``size`` + 3 per element (squares and window adds, scale, power, divide).
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, bias=1.0):
        super().__init__()
        self.size = as_int(size, "LRN: size", 1)
        self.alpha, self.beta = as_float(alpha, "LRN: alpha"), as_float(beta, "LRN: beta")
        self.bias = as_float(bias, "LRN: bias")

    def config(self):
        return {"type": "LRN", "size": self.size, "alpha": self.alpha, "beta": self.beta, "bias": self.bias}

    def forward(self, x, layout):
        ax = 1 if layout == "NCHW" else 3
        sq = np.square(x, dtype=np.float32)
        c = x.shape[ax]
        lo, hi = (self.size - 1) // 2, self.size // 2          # ONNX: floor before, ceil after
        pads = [(0, 0)] * 4
        pads[ax] = (lo, hi)
        cs = np.cumsum(np.pad(sq, pads), axis=ax, dtype=np.float64)
        cs = np.concatenate([np.zeros_like(np.take(cs, [0], axis=ax)), cs], axis=ax)
        win = np.take(cs, np.arange(self.size, self.size + c), axis=ax) - np.take(cs, np.arange(c), axis=ax)
        d = (self.bias + self.alpha / self.size * win) ** self.beta
        return (x / d).astype(np.float32)

    def cost(self, in_shape):
        return {"act_ops": (self.size + 3) * int(np.prod(in_shape))}


class Flatten(Module):
    """Flatten each image in PyTorch's (C, H, W) order, whatever the layout."""

    def forward(self, x, layout):
        if layout == "NHWC" and x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x).reshape(x.shape[0], -1)

    def out_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def cost(self, in_shape):
        return {}


class LinearShape:
    """Shape checks shared by every linear layer (exact, PQ table, hash tree):
    a batch ``(N, in_features)`` gives ``(N, out_features)``."""

    def check_batch(self, x):
        if np.ndim(x) != 2 or x.shape[1] != self.in_features:
            raise ShapeError(f"{type(self).__name__}: expected a (N, {self.in_features}) batch, "
                             f"got {np.shape(x)}")

    def out_shape(self, in_shape):
        if tuple(in_shape) != (self.in_features,):
            raise ShapeError(f"{type(self).__name__}: expected input ({self.in_features},), "
                             f"got {tuple(in_shape)}")
        return (self.out_features,)


class Linear(LinearShape, Module):
    """``y = x @ weight.T + bias``; ``weight`` (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = as_int(in_features, "Linear: in_features", 1)
        self.out_features = as_int(out_features, "Linear: out_features", 1)
        check_parameters(self.in_features * self.out_features, "Linear")
        self.params["weight"] = np.zeros((self.out_features, self.in_features), np.float32)
        if bias:
            self.params["bias"] = np.zeros(self.out_features, np.float32)

    def config(self):
        return {"type": "Linear", "in_features": self.in_features,
                "out_features": self.out_features, "bias": "bias" in self.params}

    def forward(self, x, layout):
        self.check_batch(x)
        y = x @ self.params["weight"].T
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def cost(self, in_shape):
        self.out_shape(in_shape)
        return {"macs": self.in_features * self.out_features,
                "bias_adds": self.out_features if "bias" in self.params else 0}
