"""Layers that enlarge feature maps, as detector necks use them: ``Resize`` (nearest and
bilinear, ONNX's coordinate modes) and ``ConvTranspose2d``.

``ConvTranspose2d`` is computed as what it equals: a convolution
(:func:`tabconv_np.functional.conv2d`) of the input with ``stride - 1`` zeros
inserted between its pixels, padded by ``dilation * (k - 1) - pad`` on each
side (plus ``output_padding`` at the end), with the kernel flipped and its
input and output channels swapped within each group.  Its ``cost`` counts the
multiply-accumulates of that convolution, zeros included: the work it does.
"""
import numpy as np

from .errors import ConfigError, ShapeError
from .functional import conv2d
from .module import Module
from .validate import as_float, as_int, as_pair, check_parameters

_COORDS = ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners", "tf_half_pixel_for_nn")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


class Resize(Module):
    """Each image resized to ``size`` = (Ho, Wo) by ``mode`` "nearest" or "linear" (bilinear),
    mapping output to input coordinates by ONNX ``Resize``'s ``coordinate_mode`` with the
    ``scales`` (sh, sw) the graph gives (default ``Ho / H``, ``Wo / W``); ``nearest_mode``
    rounds for "nearest".  Linear interpolation clamps coordinates to the image, as ONNX
    Runtime and PyTorch do.

    Counted: bilinear 2 ``mults`` and 1 ``adds`` per element of each of its two passes
    (along H, then W); nearest nothing (a gather).
    """

    def __init__(self, size=(1, 1), mode="nearest", coordinate_mode="asymmetric",
                 nearest_mode="floor", scales=None):
        super().__init__()
        self.size = as_pair(size, "Resize: size")
        if mode not in ("nearest", "linear"):
            raise ConfigError(f"Resize: mode must be 'nearest' or 'linear', got {mode!r}")
        if coordinate_mode not in _COORDS:
            raise ConfigError(f"Resize: coordinate_mode must be one of {_COORDS}, got {coordinate_mode!r}")
        if nearest_mode not in _NEAREST:
            raise ConfigError(f"Resize: nearest_mode must be one of {_NEAREST}, got {nearest_mode!r}")
        self.mode, self.coordinate_mode, self.nearest_mode = mode, coordinate_mode, nearest_mode
        self.scales = None if scales is None else tuple(
            as_float(s, "Resize: scales", positive=True) for s in scales)
        if self.scales is not None and len(self.scales) != 2:
            raise ConfigError(f"Resize: scales must be (sh, sw), got {scales!r}")

    def config(self):
        return {"type": "Resize", "size": list(self.size), "mode": self.mode,
                "coordinate_mode": self.coordinate_mode, "nearest_mode": self.nearest_mode,
                "scales": None if self.scales is None else list(self.scales)}

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(f"Resize: needs an image (C, H, W), got {tuple(in_shape)}")
        return (in_shape[0],) + self.size

    def _source(self, n_in, n_out, scale):
        """Input coordinate (float64) of each output index along one axis."""
        x = np.arange(n_out, dtype=np.float64)
        m = self.coordinate_mode
        if m == "align_corners":
            return x * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
        if m == "asymmetric":
            return x / scale
        if m == "tf_half_pixel_for_nn":
            return (x + 0.5) / scale
        if m == "pytorch_half_pixel" and n_out == 1:
            return np.zeros(n_out)
        return (x + 0.5) / scale - 0.5

    def _nearest(self, src, n_in):
        m = self.nearest_mode
        if m == "floor":
            i = np.floor(src)
        elif m == "ceil":
            i = np.ceil(src)
        elif m == "round_prefer_ceil":
            i = np.floor(src + 0.5)
        else:
            i = np.ceil(src - 0.5)
        return np.clip(i, 0, n_in - 1).astype(np.intp)

    def _axis(self, x, axis, n_out, scale):
        n_in = x.shape[axis]
        src = self._source(n_in, n_out, scale)
        if self.mode == "nearest":
            return np.take(x, self._nearest(src, n_in), axis=axis)
        src = np.clip(src, 0, n_in - 1)
        i0 = np.floor(src).astype(np.intp)
        i1 = np.minimum(i0 + 1, n_in - 1)
        shape = [1] * x.ndim
        shape[axis] = n_out
        t = (src - i0).astype(np.float32).reshape(shape)
        a = np.take(x, i0, axis=axis)
        return a + (np.take(x, i1, axis=axis) - a) * t

    def forward(self, x, layout):
        ah, aw = (2, 3) if layout == "NCHW" else (1, 2)
        if x.ndim != 4:
            raise ShapeError(f"Resize: expected a 4-d {layout} batch, got {x.shape}")
        h, w = x.shape[ah], x.shape[aw]
        sh, sw = self.scales or (self.size[0] / h, self.size[1] / w)
        y = self._axis(x, ah, self.size[0], sh)
        return np.ascontiguousarray(self._axis(y, aw, self.size[1], sw), dtype=np.float32)

    def cost(self, in_shape):
        if self.mode == "nearest":
            return {}
        c, h, w = in_shape
        ho, wo = self.size
        n = c * ho * w + c * ho * wo
        return {"mults": 2 * n, "adds": n}


class ConvTranspose2d(Module):
    """Transposed 2-d convolution (``torch.nn.ConvTranspose2d``, ONNX ``ConvTranspose``).

    Parameters: ``weight`` (C_in, C_out/groups, kh, kw), ``bias`` (C_out,) if ``bias``.
    ``padding`` (top, bottom, left, right) is removed from the full output;
    ``output_padding`` (h, w) adds rows and columns at the end.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=(0, 0, 0, 0),
                 output_padding=0, dilation=1, groups=1, bias=True):
        super().__init__()
        self.in_channels = as_int(in_channels, "ConvTranspose2d: in_channels", 1)
        self.out_channels = as_int(out_channels, "ConvTranspose2d: out_channels", 1)
        self.kernel_size = as_pair(kernel_size, "ConvTranspose2d: kernel_size")
        self.stride = as_pair(stride, "ConvTranspose2d: stride")
        self.dilation = as_pair(dilation, "ConvTranspose2d: dilation")
        self.output_padding = as_pair(output_padding, "ConvTranspose2d: output_padding", 0)
        self.groups = as_int(groups, "ConvTranspose2d: groups", 1)
        pads = padding if isinstance(padding, (list, tuple)) and len(padding) == 4 else \
            [p for p in as_pair(padding, "ConvTranspose2d: padding", 0) for _ in (0, 1)]
        self.padding = tuple(as_int(p, "ConvTranspose2d: padding", 0) for p in pads)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ConfigError(f"ConvTranspose2d: groups {self.groups} must divide {self.in_channels} "
                              f"and {self.out_channels}")
        check_parameters(self.in_channels * self.out_channels // self.groups * int(np.prod(self.kernel_size)),
                         "ConvTranspose2d")
        self.params["weight"] = np.zeros((self.in_channels, self.out_channels // self.groups)
                                         + self.kernel_size, np.float32)
        if bias:
            self.params["bias"] = np.zeros(self.out_channels, np.float32)

    def config(self):
        return {"type": "ConvTranspose2d", "in_channels": self.in_channels,
                "out_channels": self.out_channels, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": list(self.padding),
                "output_padding": list(self.output_padding), "dilation": list(self.dilation),
                "groups": self.groups, "bias": "bias" in self.params}

    def _conv_pads(self):
        """Padding of the equivalent convolution (top, bottom, left, right); may be negative."""
        (kh, kw), (dh, dw), (oh, ow) = self.kernel_size, self.dilation, self.output_padding
        t, b, l, r = self.padding
        return (dh * (kh - 1) - t, dh * (kh - 1) - b + oh, dw * (kw - 1) - l, dw * (kw - 1) - r + ow)

    def conv_weight(self):
        """The kernel of the equivalent convolution: (C_out, C_in/groups, kh, kw), flipped."""
        g, w = self.groups, self.params["weight"]
        cin_g, cout_g = self.in_channels // g, self.out_channels // g
        w = w.reshape(g, cin_g, cout_g, *self.kernel_size).transpose(0, 2, 1, 3, 4)
        return np.ascontiguousarray(w.reshape(self.out_channels, cin_g, *self.kernel_size)[:, :, ::-1, ::-1])

    def out_shape(self, in_shape):
        if len(in_shape) != 3 or in_shape[0] != self.in_channels:
            raise ShapeError(f"ConvTranspose2d: expected ({self.in_channels}, H, W), got {tuple(in_shape)}")
        out = [self.out_channels]
        for n, k, s, d, p0, p1, op in zip(in_shape[1:], self.kernel_size, self.stride, self.dilation,
                                          self.padding[::2], self.padding[1::2], self.output_padding):
            o = (n - 1) * s + d * (k - 1) + 1 + op - p0 - p1
            if o < 1:
                raise ShapeError(f"ConvTranspose2d: empty output for input {tuple(in_shape)}")
            out.append(o)
        return tuple(out)

    def forward(self, x, layout):
        ah, aw = (2, 3) if layout == "NCHW" else (1, 2)
        (sh, sw) = self.stride
        if sh > 1 or sw > 1:
            shape = list(x.shape)
            shape[ah], shape[aw] = (x.shape[ah] - 1) * sh + 1, (x.shape[aw] - 1) * sw + 1
            z = np.zeros(shape, np.float32)
            sl = [slice(None)] * 4
            sl[ah], sl[aw] = slice(None, None, sh), slice(None, None, sw)
            z[tuple(sl)] = x
            x = z
        pads = self._conv_pads()
        if min(pads) < 0:                     # crop what the padding removes beyond the kernel
            sl = [slice(None)] * 4
            t, b, l, r = (max(-p, 0) for p in pads)
            sl[ah], sl[aw] = slice(t, x.shape[ah] - b), slice(l, x.shape[aw] - r)
            x = np.ascontiguousarray(x[tuple(sl)])
            pads = tuple(max(p, 0) for p in pads)
        return conv2d(x, self.conv_weight(), self.params.get("bias"), 1, pads, self.dilation,
                      self.groups, layout=layout)

    def cost(self, in_shape):
        c, h, w = self.out_shape(in_shape)
        n = c * h * w
        per = self.in_channels // self.groups * int(np.prod(self.kernel_size))
        return {"macs": n * per, "bias_adds": n if "bias" in self.params else 0}
