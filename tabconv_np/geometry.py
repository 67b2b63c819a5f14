"""Convolution geometry, written once: kernel, stride, padding, dilation, groups, shapes, lowering.

Every convolution engine (the exact ``Conv2d``, the table layers, and every
later engine) holds one :class:`ConvGeometry` and asks it for its output
shape, its rows per image, its lowering to rows and the way back::

    g = ConvGeometry(C_in=16, C_out=32, kernel_size=3, stride=2, padding=1)
    g.out_shape((16, 28, 28))            # (32, 14, 14)
    rows, (N, Ho, Wo) = g.lower(x)       # im2col rows (N*Ho*Wo, D), D = C_in*kh*kw
    y = g.from_rows(rows @ w, N, Ho, Wo) # back to (N, C_out, Ho, Wo)

The functions below (:func:`conv_output_size`, :func:`im2col_rows`,
:func:`lowering_workspace_bytes`) are the same arithmetic for callers that
have no layer; :mod:`tabconv_np.functional` re-exports them.
"""
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, ShapeError
from .conv import im2col as _im2col
from .validate import as_int, as_layout, as_padding, as_pair, check_parameters


def conv_output_size(input_size, kernel_size, stride=1, padding=0, dilation=1):
    """Output height and width of a convolution (or pooling) window.

    ``Ho = (H + top + bottom - dh*(kh - 1) - 1) // sh + 1``, same for ``Wo``.

    Parameters
    ----------
    input_size : int or (H, W)
    kernel_size : int or (kh, kw)
    stride, dilation : int or pair
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same"

    Returns
    -------
    (Ho, Wo) : tuple of int

    Raises
    ------
    ShapeError
        When the (dilated) kernel is larger than the padded input.
    """
    H, W = as_pair(input_size, "input_size", 0)
    kh, kw = as_pair(kernel_size, "kernel_size")
    sh, sw = as_pair(stride, "stride")
    dh, dw = as_pair(dilation, "dilation")
    top, bottom, left, right = as_padding(padding, (kh, kw), (dh, dw), (sh, sw))
    Hp, Wp = H + top + bottom, W + left + right
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eh > Hp or ew > Wp:
        raise ShapeError(
            f"kernel {kh}x{kw} (dilation {dh},{dw}: spans {eh}x{ew}) is larger than the "
            f"padded input {Hp}x{Wp} (input {H}x{W}, padding top/bottom/left/right "
            f"{top},{bottom},{left},{right}): the output would be empty")
    return ((Hp - eh) // sh + 1, (Wp - ew) // sw + 1)


def as_batch4(x, name, layout=None):
    """``x`` as a C-contiguous float32 4-D array, or a ShapeError."""
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise ShapeError(f"{name} must be a floating-point array (float32, or float16/64 "
                         f"to be cast), got dtype {a.dtype}")
    if a.ndim != 4:
        expect = f" ({layout})" if layout else ""
        raise ShapeError(f"{name} must be 4-D{expect}, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def im2col_rows(x, kernel_size, stride=1, padding=0, dilation=1, layout="NCHW"):
    """The im2col rows of a batch: one row per output position.

    ``rows[(n*Ho + p)*Wo + q, (c*kh + i)*kw + j] = xpad[n, c, p*sh + i*dh, q*sw + j*dw]``:
    rows in (N, Ho, Wo) order, columns in (C, kh, kw) order, the order of
    ``weight.reshape(C_out, -1)``.  So ``conv2d(x, w) ==
    (rows @ w.reshape(C_out, -1).T)`` reshaped to (N, Ho, Wo, C_out).

    Parameters
    ----------
    x : float32 array (N, C, H, W) or (N, H, W, C) per ``layout``
    kernel_size : int or (kh, kw)
    stride, dilation : int or pair
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same"
    layout : "NCHW" or "NHWC"

    Returns
    -------
    rows : float32 array (N*Ho*Wo, C*kh*kw)
    (N, Ho, Wo) : tuple of int
    """
    layout = as_layout(layout)
    x = as_batch4(x, "im2col_rows: x", layout)
    kh, kw = as_pair(kernel_size, "kernel_size")
    stride = as_pair(stride, "stride")
    dilation = as_pair(dilation, "dilation")
    padding = as_padding(padding, (kh, kw), dilation, stride)
    if layout == "NCHW":
        N, C, H, W = x.shape
    else:
        N, H, W, C = x.shape
    Ho, Wo = conv_output_size((H, W), (kh, kw), stride, padding, dilation)
    rows = np.empty((N * Ho * Wo, C * kh * kw), np.float32)
    if rows.size:
        _im2col.lower(x, kh, kw, stride, padding, dilation, (Ho, Wo), layout, rows)
    return rows, (N, Ho, Wo)


def lowering_workspace_bytes(C, H, W, kh, kw, stride=1, padding=0, dilation=1, N=1):
    """Bytes of the float32 lowered matrix of im2col and of MEC for one layer.

    Parameters
    ----------
    C, H, W : int
        Input channels and size.
    kh, kw : int
        Kernel size.
    stride, dilation : int or pair
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same"
    N : int
        Batch size (the whole batch lowered at once).

    Returns
    -------
    dict
        ``{"im2col": 4*N*Ho*Wo*C*kh*kw, "mec": 4*N*Wo*Hu*kw*C}`` where
        ``Hu = (Ho-1)*sh + (kh-1)*dh + 1`` is the number of padded input rows
        the kernel touches (MEC's ``i_h``).  Groups do not change the totals
        (the kernels lower MEC one group at a time, so its peak is ``1/groups``
        of this; both drivers also chunk large batches).
    """
    C = as_int(C, "C", 1)
    N = as_int(N, "N", 1)
    kh = as_int(kh, "kh", 1)
    kw = as_int(kw, "kw", 1)
    sh, _ = as_pair(stride, "stride")
    dh, _ = as_pair(dilation, "dilation")
    Ho, Wo = conv_output_size((H, W), (kh, kw), stride, padding, dilation)
    Hu = (Ho - 1) * sh + (kh - 1) * dh + 1
    return {"im2col": 4 * N * Ho * Wo * C * kh * kw, "mec": 4 * N * Wo * Hu * kw * C}


def to_rows(y, layout):
    """A layer output as rows ``(N*Ho*Wo, M)`` in (n, ho, wo) order; a 2-d output is its own rows."""
    if y.ndim == 2:
        return y
    if layout == "NCHW":
        y = y.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(y).reshape(-1, y.shape[-1])


def from_rows(rows, N, Ho, Wo, layout):
    """Inverse of :func:`to_rows`: rows ``(N*Ho*Wo, M)`` as an (N, M, Ho, Wo) or (N, Ho, Wo, M) batch."""
    y = rows.reshape(N, Ho, Wo, rows.shape[-1])
    if layout == "NCHW":
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    return y


@dataclass(frozen=True)
class ConvGeometry:
    """The shape arithmetic of one convolution, normalised once.

    Parameters
    ----------
    C_in, C_out : int
        Input and output channels.
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (ph, pw) or (top, bottom, left, right)
        Kept as given in :attr:`padding_spec` (for configs); :attr:`padding`
        is the normalised ``(top, bottom, left, right)``, computed once.
    groups : int
        Divides ``C_in`` and ``C_out``.

    Attributes
    ----------
    D : int
        Columns of a lowered row: ``(C_in/groups)*kh*kw``.
    """

    C_in: int
    C_out: int
    kernel_size: tuple
    stride: tuple = (1, 1)
    padding_spec: object = 0
    dilation: tuple = (1, 1)
    groups: int = 1
    padding: tuple = (0, 0, 0, 0)

    def __init__(self, C_in, C_out, kernel_size, stride=1, padding=0, dilation=1, groups=1):
        set_ = object.__setattr__
        set_(self, "C_in", as_int(C_in, "in_channels", 1))
        set_(self, "C_out", as_int(C_out, "out_channels", 1))
        set_(self, "kernel_size", as_pair(kernel_size, "kernel_size"))
        set_(self, "stride", as_pair(stride, "stride"))
        set_(self, "dilation", as_pair(dilation, "dilation"))
        set_(self, "groups", as_int(groups, "groups", 1))
        if isinstance(padding, (list, tuple, np.ndarray)):
            padding = tuple(int(p) for p in padding)
        elif not isinstance(padding, str):
            padding = as_int(padding, "padding", 0)
        set_(self, "padding_spec", padding)
        # normalised once (a field, so equal geometries compare equal on it too)
        set_(self, "padding", as_padding(padding, self.kernel_size, self.dilation, self.stride))
        if self.C_in % self.groups or self.C_out % self.groups:
            raise ConfigError(f"groups={self.groups} must divide in_channels={self.C_in} "
                              f"and out_channels={self.C_out}")

    @property
    def D(self):
        return (self.C_in // self.groups) * self.kernel_size[0] * self.kernel_size[1]

    def config(self):
        """The JSON-able constructor arguments (as the layers save them)."""
        p = self.padding_spec
        return {"in_channels": self.C_in, "out_channels": self.C_out,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(p) if isinstance(p, tuple) else p,
                "dilation": list(self.dilation)}

    def out_hw(self, H, W):
        """``(Ho, Wo)`` for an ``H x W`` input; ShapeError when the output would be empty."""
        return conv_output_size((H, W), self.kernel_size, self.stride, self.padding, self.dilation)

    def out_shape(self, in_shape, who="Conv2d"):
        """Per-image output ``(C_out, Ho, Wo)`` of a per-image input ``(C_in, H, W)``."""
        if len(in_shape) != 3 or in_shape[0] != self.C_in:
            raise ShapeError(f"{who}: expected {self.C_in} input channels, got shape {tuple(in_shape)}")
        return (self.C_out,) + self.out_hw(in_shape[1], in_shape[2])

    def rows_per_image(self, H, W):
        """Output positions (lowered rows) per image: ``Ho*Wo``."""
        Ho, Wo = self.out_hw(H, W)
        return Ho * Wo

    def macs(self, in_shape):
        """Multiply-accumulates for one image: ``C_out*Ho*Wo*(C_in/groups)*kh*kw``."""
        return int(np.prod(self.out_shape(in_shape))) * self.D

    def workspace_bytes(self, in_shape):
        """``{"im2col": ..., "mec": ...}`` lowering bytes for one image (see :func:`lowering_workspace_bytes`)."""
        c, h, w = in_shape
        return lowering_workspace_bytes(c, h, w, self.kernel_size[0], self.kernel_size[1],
                                        self.stride, self.padding, self.dilation)

    def check_batch(self, x, layout, who="Conv2d"):
        """ShapeError unless ``x`` is a 4-d ``layout`` batch with ``C_in`` channels."""
        c = np.shape(x)[1 if layout == "NCHW" else 3] if np.ndim(x) == 4 else None
        if c != self.C_in:
            raise ShapeError(f"{who}: expected a 4-d {layout} batch with {self.C_in} channels, "
                             f"got shape {np.shape(x)}")

    def lower(self, x, layout="NCHW"):
        """im2col rows ``(N*Ho*Wo, C_in*kh*kw)`` of a batch, and ``(N, Ho, Wo)`` (groups must be 1)."""
        if self.groups != 1:
            raise ConfigError(f"lowering to rows needs groups=1, got groups={self.groups}")
        return im2col_rows(x, self.kernel_size, self.stride, self.padding, self.dilation, layout)

    def n_rows(self, x, layout):
        """Lowered rows of batch ``x``: ``N*Ho*Wo``."""
        H, W = (x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2])
        return len(x) * self.rows_per_image(H, W)


def attach_geometry(layer, who, in_channels, out_channels, kernel_size, stride=1, padding=0,
                    dilation=1, groups=1):
    """Give a convolution layer its :class:`ConvGeometry` and the usual attributes.

    Sets ``layer.geometry`` and ``in_channels, out_channels, groups, kernel_size, stride,
    dilation`` (normalised) and ``padding`` (as given, for the config); a bad value raises
    ConfigError naming ``who``.
    """
    try:
        g = ConvGeometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
    except ConfigError as e:
        raise ConfigError(f"{who}: {e}") from None
    check_parameters(g.C_out * g.D, who)
    layer.geometry = g
    layer.in_channels, layer.out_channels, layer.groups = g.C_in, g.C_out, g.groups
    layer.kernel_size, layer.stride, layer.dilation = g.kernel_size, g.stride, g.dilation
    layer.padding = g.padding_spec
    return g

