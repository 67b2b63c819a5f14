"""Validated convolution API in front of the Numba kernels.

:func:`conv2d` mirrors ``torch.nn.functional.conv2d`` (cross-correlation,
weight ``(C_out, C_in/groups, kh, kw)``) for NCHW or NHWC float32 input and
dispatches to one of the algorithms in :mod:`tabconv_np.kernels`:

========  ==============================================================
naive     :func:`tabconv_np.reference.conv2d_naive`, plain loops (oracle)
im2col    lowering to ``(N*Ho*Wo, C*kh*kw)`` rows + BLAS GEMM per group
mec       MEC lowering ``(N*Wo, Hu*kw*C)`` (about kh/sh times smaller) + GEMMs
direct    reordered loops, no buffer; best for depthwise / small groups
auto      picks by shape (see :func:`choose_method`)
========  ==============================================================

The helpers the rest of the package needs live here too:
:func:`conv_output_size`, :func:`normalize_padding`, :func:`im2col_rows`
(the rows the table-lookup layers encode) and
:func:`lowering_workspace_bytes` (for the operation counter).

Every public function validates its input and raises
:class:`~tabconv_np.errors.ShapeError` (arrays) or
:class:`~tabconv_np.errors.ConfigError` (settings) with a message naming the
argument and the offending value; the kernels themselves never validate.
"""
import numbers
import operator

import numpy as np

from .errors import ConfigError, ShapeError
from .conv import direct as _direct
from .conv import im2col as _im2col
from .conv import mec as _mec
from .reference import conv2d_naive

METHODS = ("naive", "im2col", "mec", "direct", "auto")
LAYOUTS = ("NCHW", "NHWC")

__all__ = ["conv2d", "conv_output_size", "normalize_padding", "im2col_rows",
           "lowering_workspace_bytes", "choose_method", "METHODS", "LAYOUTS"]


# ---------------------------------------------------------------- arguments
def _int(v, name, minimum):
    """``v`` as a Python int >= minimum (bools and floats refused)."""
    if type(v) is int:                      # fast path (bool is not int here)
        if v < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {v}")
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise ConfigError(f"{name} must be an int, got {v!r} ({type(v).__name__})")
    v = operator.index(v)
    if v < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {v}")
    return v


def _pair(v, name, minimum=1):
    """int or pair of ints -> (int, int), each >= minimum."""
    if type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int \
            and v[0] >= minimum and v[1] >= minimum:
        return v                            # fast path
    if isinstance(v, (tuple, list, np.ndarray)):
        if len(v) != 2:
            raise ConfigError(f"{name} must be an int or a pair (h, w), got {v!r}")
        return (_int(v[0], f"{name}[0]", minimum), _int(v[1], f"{name}[1]", minimum))
    v = _int(v, name, minimum)
    return (v, v)


def normalize_padding(padding, kernel_size=None, dilation=1, stride=1):
    """Padding in any accepted form as ``(top, bottom, left, right)``.

    Parameters
    ----------
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same"
        Zero padding.  ``"same"`` (stride 1 only, as in PyTorch) pads
        ``d*(k-1)`` in total per axis, the extra pixel at the bottom/right.
    kernel_size : int or (kh, kw), optional
        Needed for ``"same"`` only.
    dilation, stride : int or pair
        Used by ``"same"`` only.

    Returns
    -------
    tuple of 4 non-negative ints
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if kernel_size is None:
                raise ConfigError("padding='same' needs the kernel size")
            if _pair(stride, "stride") != (1, 1):
                raise ConfigError(f"padding='same' needs stride 1, got stride={stride!r}")
            kh, kw = _pair(kernel_size, "kernel_size")
            dh, dw = _pair(dilation, "dilation")
            th, tw = dh * (kh - 1), dw * (kw - 1)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ConfigError(f"padding must be an int, a pair, a 4-tuple, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (tuple, list, np.ndarray)):
        if len(padding) == 2:
            ph, pw = _pair(padding, "padding", 0)
            return (ph, ph, pw, pw)
        if len(padding) == 4:
            names = ("top", "bottom", "left", "right")
            return tuple(_int(p, f"padding[{k}] ({names[k]})", 0) for k, p in enumerate(padding))
        raise ConfigError(
            f"padding must be an int, (ph, pw) or (top, bottom, left, right), got {padding!r}")
    p = _int(padding, "padding", 0)
    return (p, p, p, p)


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
    H, W = _pair(input_size, "input_size", 0)
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    top, bottom, left, right = normalize_padding(padding, (kh, kw), (dh, dw), (sh, sw))
    Hp, Wp = H + top + bottom, W + left + right
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eh > Hp or ew > Wp:
        raise ShapeError(
            f"kernel {kh}x{kw} (dilation {dh},{dw}: spans {eh}x{ew}) is larger than the "
            f"padded input {Hp}x{Wp} (input {H}x{W}, padding top/bottom/left/right "
            f"{top},{bottom},{left},{right}): the output would be empty")
    return ((Hp - eh) // sh + 1, (Wp - ew) // sw + 1)


def _array4(x, name, layout=None):
    """``x`` as a C-contiguous float32 4-D array, or a ShapeError."""
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise ShapeError(f"{name} must be a floating-point array (float32, or float16/64 "
                         f"to be cast), got dtype {a.dtype}")
    if a.ndim != 4:
        expect = f" ({layout})" if layout else ""
        raise ShapeError(f"{name} must be 4-D{expect}, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _layout(layout):
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


# ------------------------------------------------------------------ methods
#: Grouped convolutions with at most this many input channels per group
#: (depthwise included) go to the direct kernel; wider groups to MEC.  From
#: the grouped-convolution table of docs/bench_conv.md: with many groups
#: im2col's per-group GEMMs are tiny and slow; direct wins up to about 8
#: channels per group, MEC beyond.
DIRECT_MAX_GROUP_CHANNELS = 8
#: Ungrouped stride-1 convolutions with at most this many lowered columns
#: (``C*kh*kw``: 3x3 stems on 1-3 channels) also go to the direct kernel:
#: the GEMM is tiny and writing then transposing its result costs more than
#: the arithmetic (docs/bench_conv.md, "stem" rows).
DIRECT_MAX_COLUMNS = 32


def choose_method(C, H, W, C_out, kernel_size, stride=1, dilation=1, groups=1, N=1):
    """The method ``method="auto"`` uses for this convolution.

    * ``groups > 1`` and at most ``DIRECT_MAX_GROUP_CHANNELS`` input channels
      per group (depthwise, narrow groups): ``direct``;
    * other grouped convolutions: ``mec`` (measured faster than im2col
      there; its lowered matrix is about ``kh/sh`` times smaller);
    * ``groups == 1``, stride 1 and at most ``DIRECT_MAX_COLUMNS`` lowered
      columns ``C*kh*kw`` (stems on 1-3 channels): ``direct``;
    * otherwise ``im2col``, the fastest or near it on the other ResNet-18
      layers in ``docs/bench_conv.md``.

    Parameters
    ----------
    C, H, W : int
        Input channels and size.
    C_out : int
    kernel_size, stride, dilation : int or pair
    groups, N : int

    Returns
    -------
    str
        One of ``"im2col"``, ``"mec"``, ``"direct"``.
    """
    if groups > 1:
        return "direct" if C // groups <= DIRECT_MAX_GROUP_CHANNELS else "mec"
    kh, kw = _pair(kernel_size, "kernel_size")
    if C * kh * kw <= DIRECT_MAX_COLUMNS and _pair(stride, "stride") == (1, 1):
        return "direct"
    return "im2col"


_DRIVERS = {
    "im2col": _im2col.conv2d_im2col,
    "mec": _mec.conv2d_mec,
    "direct": _direct.conv2d_direct,
}


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           method="auto", layout="NCHW"):
    """2-D convolution (cross-correlation), like ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : float32 array (N, C, H, W) for ``layout="NCHW"``, (N, H, W, C) for "NHWC"
        float16/float64 input is cast to float32; other dtypes are refused.
    weight : float32 array (C_out, C/groups, kh, kw) (OIHW, whatever the layout)
    bias : float32 array (C_out,) or None
    stride, dilation : int or (int, int), >= 1
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same"
        Zero padding, >= 0.
    groups : int
        Divides both C and C_out; ``groups == C`` is a depthwise convolution.
    method : "auto", "im2col", "mec", "direct" or "naive"
    layout : "NCHW" or "NHWC"
        Layout of ``x`` and of the result.

    Returns
    -------
    float32 array (N, C_out, Ho, Wo) or (N, Ho, Wo, C_out), with
    ``Ho, Wo = conv_output_size((H, W), (kh, kw), stride, padding, dilation)``.

    Raises
    ------
    ShapeError
        Wrong ndim or dtype, channel mismatch, bias shape, empty output.
    ConfigError
        Bad stride, padding, dilation, groups, method or layout.
    """
    layout = _layout(layout)
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    x = _array4(x, "conv2d: x", layout)
    weight = _array4(weight, "conv2d: weight", "C_out, C_in/groups, kh, kw")
    groups = _int(groups, "groups", 1)
    stride = _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    if layout == "NCHW":
        N, C, H, W = x.shape
    else:
        N, H, W, C = x.shape
    C_out, Cg, kh, kw = weight.shape
    if min(C_out, Cg, kh, kw) == 0:
        raise ShapeError(f"conv2d: weight shape {weight.shape} has a zero dimension")
    if C % groups:
        raise ConfigError(f"conv2d: groups={groups} does not divide the {C} input channels "
                          f"of x {x.shape} ({layout})")
    if C_out % groups:
        raise ConfigError(f"conv2d: groups={groups} does not divide the {C_out} output "
                          f"channels of weight {weight.shape}")
    if C // groups != Cg:
        raise ShapeError(f"conv2d: weight {weight.shape} expects {Cg} input channels per "
                         f"group, x {x.shape} ({layout}) has {C} channels / groups={groups} "
                         f"= {C // groups}")
    padding = normalize_padding(padding, (kh, kw), dilation, stride)
    out_hw = conv_output_size((H, W), (kh, kw), stride, padding, dilation)
    if bias is not None:
        b = np.asarray(bias)
        if b.dtype.kind != "f":
            raise ShapeError(f"conv2d: bias must be a floating-point array, got dtype {b.dtype}")
        if b.shape != (C_out,):
            raise ShapeError(f"conv2d: bias must have shape ({C_out},) to match weight "
                             f"{weight.shape}, got {b.shape}")
        bias = np.ascontiguousarray(b, dtype=np.float32)
    if method == "auto":
        method = choose_method(C, H, W, C_out, (kh, kw), stride, dilation, groups, N)
    if method == "naive":
        xn = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
        y = conv2d_naive(xn, weight, bias, stride, padding, dilation, groups)
        return y if layout == "NCHW" else np.ascontiguousarray(y.transpose(0, 2, 3, 1))
    if N == 0:
        shape = (0, C_out) + out_hw if layout == "NCHW" else (0,) + out_hw + (C_out,)
        return np.empty(shape, np.float32)
    return _DRIVERS[method](x, weight, bias, stride, padding, dilation, groups, layout, out_hw)


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
    layout = _layout(layout)
    x = _array4(x, "im2col_rows: x", layout)
    kh, kw = _pair(kernel_size, "kernel_size")
    stride = _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    padding = normalize_padding(padding, (kh, kw), dilation, stride)
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
    C = _int(C, "C", 1)
    N = _int(N, "N", 1)
    kh = _int(kh, "kh", 1)
    kw = _int(kw, "kw", 1)
    sh, _ = _pair(stride, "stride")
    dh, _ = _pair(dilation, "dilation")
    Ho, Wo = conv_output_size((H, W), (kh, kw), stride, padding, dilation)
    Hu = (Ho - 1) * sh + (kh - 1) * dh + 1
    return {"im2col": 4 * N * Ho * Wo * C * kh * kw, "mec": 4 * N * Wo * Hu * kw * C}
