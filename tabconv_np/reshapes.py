"""Layers that move values without arithmetic: general reshape and transpose (a flatten in
another order), channel gathers (``Split``, ``Slice``, a channel shuffle), padding, and the
option-A ResNet shortcut (``SubsamplePad``: strided subsample, zero channels).

Reshape and Transpose act in PyTorch's order (channels first) whatever the
layout: in ``"NHWC"`` a 4-d input is read as an image and put in channels-first
order first, and a 4-d result is put back.  They count nothing (copies).
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .module import Module
from .validate import as_int, channel_axis

_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


def _int_list(values, what, lo):
    try:
        out = [as_int(v, what, lo) for v in values]
    except TypeError:
        raise ConfigError(f"{what} must be a list of ints, got {values!r:.80}") from None
    if not out:
        raise ConfigError(f"{what} must not be empty")
    return out


def _canonical(x, layout):
    return x.transpose(_TO_NCHW) if layout == "NHWC" and x.ndim == 4 else x


def _back(y, layout):
    return np.ascontiguousarray(y.transpose(_TO_NHWC) if layout == "NHWC" and y.ndim == 4 else y)


class Reshape(Module):
    """Each image reshaped to ``shape`` (per-image, no batch axis), in channels-first order."""

    def __init__(self, shape=(1,)):
        super().__init__()
        self.shape = tuple(_int_list(shape, "Reshape: shape", 1))

    def config(self):
        return {"type": "Reshape", "shape": list(self.shape)}

    def forward(self, x, layout):
        y = np.ascontiguousarray(_canonical(x, layout)).reshape((len(x),) + self.shape)
        return _back(y, layout)

    def out_shape(self, in_shape):
        if int(np.prod(in_shape)) != int(np.prod(self.shape)):
            raise ShapeError(f"Reshape: cannot reshape {tuple(in_shape)} to {self.shape}")
        return self.shape

    def cost(self, in_shape):
        return {}


class Transpose(Module):
    """Per-image axes permuted by ``perm`` (a permutation of ``0..ndim-1``, no batch axis)."""

    def __init__(self, perm=(0,)):
        super().__init__()
        self.perm = tuple(_int_list(perm, "Transpose: perm", 0))
        if sorted(self.perm) != list(range(len(self.perm))):
            raise ConfigError(f"Transpose: perm {list(self.perm)} is not a permutation")

    def config(self):
        return {"type": "Transpose", "perm": list(self.perm)}

    def forward(self, x, layout):
        y = _canonical(x, layout).transpose((0,) + tuple(p + 1 for p in self.perm))
        return _back(y, layout)

    def out_shape(self, in_shape):
        if len(in_shape) != len(self.perm):
            raise ShapeError(f"Transpose: perm {list(self.perm)} for shape {tuple(in_shape)}")
        return tuple(in_shape[p] for p in self.perm)

    def cost(self, in_shape):
        return {}


class ChannelGather(Module):
    """Channels ``indices`` of each image (or features of a flat tensor), in that order: a
    ``Split`` or ``Slice`` along the channels (a range), or a channel shuffle (a permutation)."""

    def __init__(self, indices=(0,)):
        super().__init__()
        self.indices = tuple(_int_list(indices, "ChannelGather: indices", 0))

    @classmethod
    def span(cls, start, stop, step=1):
        """Channels ``start, start + step, ... < stop``."""
        return cls(range(start, stop, step))

    def config(self):
        return {"type": "ChannelGather", "indices": list(self.indices)}

    def extra_repr(self):
        i = self.indices
        r = range(i[0], i[-1] + 1, i[1] - i[0]) if len(i) > 1 and i[1] > i[0] else None
        return f"channels {r.start}:{r.stop}:{r.step}" if r is not None and tuple(r) == i else f"channels {list(i)}"

    def forward(self, x, layout):
        return np.take(x, self.indices, axis=channel_axis(layout) if x.ndim == 4 else 1)

    def out_shape(self, in_shape):
        if not in_shape or max(self.indices) >= in_shape[0]:
            raise ShapeError(f"ChannelGather: channels up to {max(self.indices)} of shape {tuple(in_shape)}")
        return (len(self.indices),) + tuple(in_shape[1:])

    def cost(self, in_shape):
        return {}


class Pad(Module):
    """Spatial padding ``(top, bottom, left, right)`` of images; ``mode`` constant (with
    ``value``), reflect or edge, as in ONNX ``Pad``."""

    MODES = ("constant", "reflect", "edge")

    def __init__(self, pads=(0, 0, 0, 0), mode="constant", value=0.0):
        super().__init__()
        self.pads = tuple(_int_list(pads, "Pad: pads", 0))
        if len(self.pads) != 4:
            raise ConfigError(f"Pad: pads must be (top, bottom, left, right), got {list(self.pads)}")
        if mode not in self.MODES:
            raise ConfigError(f"Pad: mode must be one of {self.MODES}, got {mode!r}")
        self.mode, self.value = mode, float(value)

    def config(self):
        return {"type": "Pad", "pads": list(self.pads), "mode": self.mode, "value": self.value}

    def forward(self, x, layout):
        t, b, l, r = self.pads
        width = [(0, 0)] * 4
        ah, aw = (2, 3) if layout == "NCHW" else (1, 2)
        width[ah], width[aw] = (t, b), (l, r)
        if self.mode == "constant":
            return np.pad(x, width, constant_values=np.float32(self.value))
        return np.pad(x, width, mode=self.mode)

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"Pad: needs an image (C, H, W), got {tuple(in_shape)}")
        c, h, w = in_shape
        t, b, l, r = self.pads
        if self.mode == "reflect" and (max(t, b) >= h or max(l, r) >= w):
            raise ShapeError(f"Pad: reflect padding {self.pads} of a {h}x{w} image")
        return (c, h + t + b, w + l + r)

    def cost(self, in_shape):
        return {}


class SubsamplePad(Module):
    """He et al.'s option-A ResNet shortcut: every ``stride``-th row and column of each image,
    then ``before`` zero channels in front and ``after`` behind (no parameters, no arithmetic).

    ``y[:, before + c, i, j] = x[:, c, i·stride, j·stride]``; the padded channels are zero.
    Output ``(before + C + after, ceil(H / stride), ceil(W / stride))``, as PyTorch's
    ``F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, before, after))``.
    """

    def __init__(self, stride=2, before=0, after=0):
        super().__init__()
        self.stride = as_int(stride, "SubsamplePad: stride", 1)
        self.before = as_int(before, "SubsamplePad: before", 0)
        self.after = as_int(after, "SubsamplePad: after", 0)

    def config(self):
        return {"type": "SubsamplePad", "stride": self.stride, "before": self.before,
                "after": self.after}

    def extra_repr(self):
        return f"stride {self.stride}, channels +{self.before}/+{self.after}"

    def forward(self, x, layout):
        s, ca = self.stride, channel_axis(layout)
        sub = x[:, :, ::s, ::s] if ca == 1 else x[:, ::s, ::s, :]
        width = [(0, 0)] * 4
        width[ca] = (self.before, self.after)
        return np.pad(sub, width)

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"SubsamplePad: needs an image (C, H, W), got {tuple(in_shape)}")
        c, h, w = in_shape
        s = self.stride
        return (self.before + c + self.after, -(-h // s), -(-w // s))

    def cost(self, in_shape):
        return {}
