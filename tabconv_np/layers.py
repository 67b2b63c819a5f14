"""Inference layers: Conv2d, BatchNorm2d, ReLU, pooling, Linear, Flatten, Dropout,
Sequential and the ResNet BasicBlock.

Every layer works in either layout, ``"NCHW"`` or ``"NHWC"``: the network picks
one and converts its input once, at its edge.  Parameters follow PyTorch's
names and shapes (conv weight OIHW, linear weight ``(out, in)``), so a torch
``state_dict`` maps one to one.
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .module import Module, channel_axis, pair, register

_SPATIAL = {"NCHW": (2, 3), "NHWC": (1, 2)}


def _check_channels(layer, x, layout, expected):
    c = x.shape[channel_axis(layout)] if x.ndim == 4 else None
    if x.ndim != 4 or c != expected:
        raise ShapeError(f"{layer}: expected a 4-d {layout} batch with {expected} channels, "
                         f"got shape {x.shape}")


@register
class Conv2d(Module):
    """2-d convolution (cross-correlation, as in PyTorch).

    Parameters: ``weight`` (C_out, C_in/groups, kh, kw), ``bias`` (C_out,) if ``bias``.
    ``method`` picks the kernel: naive | im2col | mec | direct | auto
    (see :func:`tabconv_np.functional.conv2d`).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, method="auto"):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = tuple(int(p) for p in padding) if isinstance(padding, (list, tuple)) else int(padding)
        self.dilation = pair(dilation, "dilation")
        self.groups, self.method = int(groups), method
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ConfigError(f"Conv2d: groups={groups} must divide in_channels={in_channels} "
                              f"and out_channels={out_channels}")
        self.params["weight"] = np.zeros(
            (self.out_channels, self.in_channels // self.groups) + self.kernel_size, np.float32)
        if bias:
            self.params["bias"] = np.zeros(self.out_channels, np.float32)

    def config(self):
        return {"type": "Conv2d", "in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding) if isinstance(self.padding, tuple) else self.padding,
                "dilation": list(self.dilation), "groups": self.groups,
                "bias": "bias" in self.params, "method": self.method}

    def forward(self, x, layout):
        from .functional import conv2d
        return conv2d(x, self.params["weight"], self.params.get("bias"), self.stride, self.padding,
                      self.dilation, self.groups, method=self.method, layout=layout)

    def out_shape(self, in_shape):
        from .functional import conv_output_size
        c, h, w = in_shape
        if c != self.in_channels:
            raise ShapeError(f"Conv2d: expected {self.in_channels} input channels, got shape {in_shape}")
        ho, wo = conv_output_size((h, w), self.kernel_size, self.stride, self.padding, self.dilation)
        return (self.out_channels, ho, wo)


@register
class BatchNorm2d(Module):
    """Inference batch norm: ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``."""

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.num_features, self.eps = int(num_features), float(eps)
        n = self.num_features
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


@register
class ReLU(Module):
    def forward(self, x, layout):
        return np.maximum(x, np.float32(0))


@register
class Dropout(Module):
    """Identity at inference; kept so that imported layer lists line up."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = float(p)

    def config(self):
        return {"type": "Dropout", "p": self.p}

    def forward(self, x, layout):
        return x


class _Pool2d(Module):
    """Shared windowing of MaxPool2d and AvgPool2d (floor mode, zero or -inf padding)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride if stride is not None else kernel_size, "stride")
        self.padding = pair(padding, "padding")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ConfigError(f"{type(self).__name__}: padding {self.padding} must be at most half "
                              f"the kernel {self.kernel_size}")

    def config(self):
        return {"type": type(self).__name__, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": list(self.padding)}

    def out_shape(self, in_shape):
        c, h, w = in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if ho < 1 or wo < 1:
            raise ShapeError(f"{type(self).__name__}: input {in_shape} is smaller than the "
                             f"kernel {self.kernel_size}")
        return (c, ho, wo)

    def _windows(self, x, layout, fill):
        """View of shape (N, C, Ho, Wo, kh, kw) or (N, Ho, Wo, C, kh, kw) over the padded input."""
        if x.ndim != 4:
            raise ShapeError(f"{type(self).__name__}: expected a 4-d {layout} batch, got {x.shape}")
        ah, aw = _SPATIAL[layout]
        (ph, pw), (sh, sw) = self.padding, self.stride
        if ph or pw:
            pads = [(0, 0)] * 4
            pads[ah], pads[aw] = (ph, ph), (pw, pw)
            x = np.pad(x, pads, constant_values=fill)
        win = np.lib.stride_tricks.sliding_window_view(x, self.kernel_size, axis=(ah, aw))
        sl = [slice(None)] * 4
        sl[ah], sl[aw] = slice(None, None, sh), slice(None, None, sw)
        return win[tuple(sl)]


@register
class MaxPool2d(_Pool2d):
    def forward(self, x, layout):
        return np.ascontiguousarray(self._windows(x, layout, -np.inf).max(axis=(-2, -1)))


@register
class AvgPool2d(_Pool2d):
    """Average pooling; zero padding counts in the average (PyTorch's default)."""

    def forward(self, x, layout):
        return np.ascontiguousarray(self._windows(x, layout, 0.0).mean(axis=(-2, -1), dtype=np.float32))


@register
class GlobalAvgPool2d(Module):
    """Mean over the spatial axes, keeping them as 1x1 (``AdaptiveAvgPool2d(1)``)."""

    def forward(self, x, layout):
        return x.mean(axis=_SPATIAL[layout], keepdims=True, dtype=np.float32)

    def out_shape(self, in_shape):
        return (in_shape[0], 1, 1)


@register
class Flatten(Module):
    """Flatten each image in PyTorch's (C, H, W) order, whatever the layout."""

    def forward(self, x, layout):
        if layout == "NHWC" and x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x).reshape(x.shape[0], -1)

    def out_shape(self, in_shape):
        return (int(np.prod(in_shape)),)


@register
class Linear(Module):
    """``y = x @ weight.T + bias``; ``weight`` (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.params["weight"] = np.zeros((self.out_features, self.in_features), np.float32)
        if bias:
            self.params["bias"] = np.zeros(self.out_features, np.float32)

    def config(self):
        return {"type": "Linear", "in_features": self.in_features,
                "out_features": self.out_features, "bias": "bias" in self.params}

    def forward(self, x, layout):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ShapeError(f"Linear: expected a (N, {self.in_features}) batch, got {x.shape}")
        y = x @ self.params["weight"].T
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def out_shape(self, in_shape):
        if tuple(in_shape) != (self.in_features,):
            raise ShapeError(f"Linear: expected input ({self.in_features},), got {tuple(in_shape)}")
        return (self.out_features,)


@register
class Sequential(Module):
    """Children applied in order; ``children`` is a list of ``[name, config]`` pairs in its config."""

    def __init__(self, children=()):
        super().__init__()
        for name, child in children:
            self.children[str(name)] = child if isinstance(child, Module) else _from_cfg(child)

    @classmethod
    def from_config(cls, cfg):
        return cls([(n, _from_cfg(c)) for n, c in cfg.get("children", [])])

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

    def count(self, in_shape, name):
        rows = []
        for n, child in self.children.items():
            rows += child.count(in_shape, f"{name}.{n}" if name else n)
            in_shape = child.out_shape(in_shape)
        return rows


def _from_cfg(cfg):
    from .module import from_config
    return from_config(cfg)


@register
class BasicBlock(Module):
    """ResNet basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Children ``conv1, bn1, conv2, bn2`` and, when ``stride != 1`` or the width
    changes, ``downsample`` = Sequential(``0``: 1x1 conv with the stride, ``1``: BN).
    A block whose BNs were folded (``fold_batchnorm``) has ``batchnorm=False``:
    no BN children, convs with bias.
    """

    def __init__(self, in_planes, planes, stride=1, eps=1e-5, batchnorm=True):
        super().__init__()
        self.in_planes, self.planes, self.stride = int(in_planes), int(planes), int(stride)
        self.eps, self.batchnorm = float(eps), bool(batchnorm)
        c = self.children
        c["conv1"] = Conv2d(in_planes, planes, 3, stride, 1, bias=not batchnorm)
        if batchnorm:
            c["bn1"] = BatchNorm2d(planes, eps)
        c["conv2"] = Conv2d(planes, planes, 3, 1, 1, bias=not batchnorm)
        if batchnorm:
            c["bn2"] = BatchNorm2d(planes, eps)
        if stride != 1 or in_planes != planes:
            ds = [("0", Conv2d(in_planes, planes, 1, stride, 0, bias=not batchnorm))]
            if batchnorm:
                ds.append(("1", BatchNorm2d(planes, eps)))
            c["downsample"] = Sequential(ds)

    def config(self):
        return {"type": "BasicBlock", "in_planes": self.in_planes, "planes": self.planes,
                "stride": self.stride, "eps": self.eps, "batchnorm": self.batchnorm,
                "children": [[n, m.config()] for n, m in self.children.items()]}

    @classmethod
    def from_config(cls, cfg):
        block = cls(cfg["in_planes"], cfg["planes"], cfg.get("stride", 1), cfg.get("eps", 1e-5),
                    cfg.get("batchnorm", True))
        # children may have been replaced (e.g. by table layers): rebuild those from their configs
        for n, c in cfg.get("children", []):
            if n not in block.children or block.children[n].config() != c:
                block.children[n] = _from_cfg(c)
        return block

    def main_path(self):
        """The layers of the residual branch, in order."""
        c = self.children
        names = ["conv1", "bn1", None, "conv2", "bn2"] if self.batchnorm else ["conv1", None, "conv2"]
        return [c[n] if n else ReLU() for n in names]

    def forward(self, x, layout):
        y = x
        for m in self.main_path():
            y = m.forward(y, layout)
        s = self.children["downsample"].forward(x, layout) if "downsample" in self.children else x
        y += s
        return np.maximum(y, np.float32(0), out=y)

    def out_shape(self, in_shape):
        return self.children["conv2"].out_shape(self.children["conv1"].out_shape(in_shape))

    def count(self, in_shape, name):
        from .ops import row
        rows, shape = [], in_shape
        names = [n for n in ("conv1", "bn1", "relu1", "conv2", "bn2") if n in self.children or n == "relu1"]
        for n, m in zip(names, self.main_path()):
            rows += m.count(shape, f"{name}.{n}")
            shape = m.out_shape(shape)
        if "downsample" in self.children:
            rows += self.children["downsample"].count(in_shape, f"{name}.downsample")
        rows.append(row(f"{name}.add_relu", self, in_shape, shape, residual=True))
        return rows

