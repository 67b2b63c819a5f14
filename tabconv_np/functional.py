"""Validated convolution API in front of the Numba kernels.

:func:`conv2d` mirrors ``torch.nn.functional.conv2d`` (cross-correlation,
weight ``(C_out, C_in/groups, kh, kw)``) for NCHW or NHWC float32 input and
dispatches to one of the algorithms in :mod:`tabconv_np.kernels`:

========  ==============================================================
naive     :func:`tabconv_np.reference.conv2d_naive`, plain loops (oracle)
im2col    lowering to ``(N*Ho*Wo, C*kh*kw)`` rows + BLAS GEMM per group
mec       MEC lowering ``(N*Wo, Hu*kw*C)`` (about kh/sh times smaller) + GEMMs
direct    reordered loops, no buffer; best for depthwise / small groups
winograd  Winograd F(2x2, 3x3): 2.25x fewer multiplications (3x3, stride 1)
winograd4 Winograd F(4x4, 3x3): 4x fewer multiplications, larger rounding error
strassen  im2col lowering + one level of Strassen's product (7/8 of the multiplies)
auto      picks by shape (see :func:`choose_method`)
========  ==============================================================

The shape helpers :func:`conv_output_size`, :func:`normalize_padding`,
:func:`im2col_rows` and :func:`lowering_workspace_bytes` are re-exported from
:mod:`tabconv_np.geometry` and :mod:`tabconv_np.validate`, where they live.

Every public function validates its input and raises
:class:`~tabconv_np.errors.ShapeError` (arrays) or
:class:`~tabconv_np.errors.ConfigError` (settings) with a message naming the
argument and the offending value; the kernels themselves never validate.
"""
from functools import partial

import numpy as np

from .errors import ConfigError, ShapeError
from .conv import direct as _direct
from .conv import mec as _mec
from .conv import im2col as _im2col
from .conv import strassen as _strassen
from .conv import winograd as _winograd
from .geometry import as_batch4, conv_output_size, im2col_rows, lowering_workspace_bytes
from .reference import conv2d_naive
from .validate import LAYOUTS, as_int, as_layout, as_padding, as_pair

#: ``normalize_padding(padding, kernel_size, dilation, stride)`` -> (top, bottom, left, right)
normalize_padding = as_padding

METHODS = ("naive", "im2col", "mec", "direct", "winograd", "winograd4", "strassen", "auto")
#: Methods for 3x3, stride-1, dilation-1 convolutions (ungrouped or depthwise): output tile size m.
WINOGRAD_TILES = {"winograd": 2, "winograd4": 4}


def winograd_applies(kernel, stride, dilation, groups=1, in_channels=None):
    """Whether a convolution has a Winograd form here: 3x3, stride 1, dilation 1, and groups 1
    or depthwise (``groups == in_channels``)."""
    return (tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and (groups == 1 or groups == in_channels))

__all__ = ["conv2d", "conv_output_size", "normalize_padding", "im2col_rows",
           "lowering_workspace_bytes", "choose_method", "METHODS", "LAYOUTS"]


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
#: Ungrouped 3x3 stride-1 convolutions go to Winograd F(4x4, 3x3) when both
#: channel counts reach WINOGRAD_MIN_CHANNELS (the tile transforms cost about
#: 1/C + 1/C_out of the elementwise stage), the call has at least
#: WINOGRAD_MIN_TILES 4x4 output tiles (``conv2d`` transforms the filters on
#: every call: 9/tiles of the elementwise stage) and the tiles are at least
#: WINOGRAD_MIN_FILL full (a 2x2 output in a 4x4 tile multiplies as much as
#: im2col).  From the 3x3 rows of docs/bench_conv.md ("Winograd" section).
WINOGRAD_MIN_CHANNELS = 32
WINOGRAD_MIN_TILES = 32
WINOGRAD_MIN_FILL = 0.5


def _winograd_pays(C, C_out, N, out_hw, m=4):
    """Whether F(m x m, 3 x 3) through :func:`conv2d` should beat im2col here (see the constants)."""
    Ho, Wo = out_hw
    tiles = -(-Ho // m) * -(-Wo // m)
    return (min(C, C_out) >= WINOGRAD_MIN_CHANNELS and N * tiles >= WINOGRAD_MIN_TILES
            and Ho * Wo >= WINOGRAD_MIN_FILL * tiles * m * m)


def choose_method(C, H, W, C_out, kernel_size, stride=1, dilation=1, groups=1, N=1, out_hw=None):
    """The method ``method="auto"`` uses for this convolution.

    * ``groups > 1`` and at most ``DIRECT_MAX_GROUP_CHANNELS`` input channels
      per group (depthwise, narrow groups): ``direct``;
    * other grouped convolutions: ``mec`` (measured faster than im2col
      there; its lowered matrix is about ``kh/sh`` times smaller);
    * ``groups == 1``, stride 1 and at most ``DIRECT_MAX_COLUMNS`` lowered
      columns ``C*kh*kw`` (stems on 1-3 channels): ``direct``;
    * 3x3, stride 1, dilation 1, ``groups == 1``, at least
      ``WINOGRAD_MIN_CHANNELS`` channels in and out, at least
      ``WINOGRAD_MIN_TILES`` 4x4 output tiles in the call, filled at least
      ``WINOGRAD_MIN_FILL``: ``winograd4`` (F(4x4, 3x3));
    * otherwise ``im2col``, the fastest or near it on the other ResNet-18
      layers in ``docs/bench_conv.md``.

    Depthwise Winograd is never picked: the direct kernel beats it on the
    32- and 128-channel depthwise rows of docs/bench_conv.md; it won on one
    512-channel 4x4 shape, too few to set a rule on.

    Parameters
    ----------
    C, H, W : int
        Input channels and size.
    C_out : int
    kernel_size, stride, dilation : int or pair
    groups, N : int
    out_hw : (int, int), optional
        Output size; by default ``(H, W)`` (a "same"-padded stride-1 convolution).

    Returns
    -------
    str
        One of ``"im2col"``, ``"mec"``, ``"direct"``, ``"winograd4"``.
    """
    if groups > 1:
        return "direct" if C // groups <= DIRECT_MAX_GROUP_CHANNELS else "mec"
    kh, kw = as_pair(kernel_size, "kernel_size")
    stride = as_pair(stride, "stride")
    if C * kh * kw <= DIRECT_MAX_COLUMNS and stride == (1, 1):
        return "direct"
    if (winograd_applies((kh, kw), stride, as_pair(dilation, "dilation"))
            and _winograd_pays(C, C_out, N, (H, W) if out_hw is None else out_hw)):
        return "winograd4"
    return "im2col"


_DRIVERS = {
    "im2col": _im2col.conv2d_im2col,
    "mec": _mec.conv2d_mec,
    "direct": _direct.conv2d_direct,
    "winograd": partial(_winograd.conv2d_winograd, m=2),
    "winograd4": partial(_winograd.conv2d_winograd, m=4),
    "strassen": _strassen.conv2d_strassen,
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
    method : "auto", "im2col", "mec", "direct", "winograd", "winograd4", "strassen" or "naive"
        The Winograd methods take 3x3, stride-1, dilation-1 convolutions, ungrouped or depthwise.
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
    layout = as_layout(layout)
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS}, got {method!r}")
    x = as_batch4(x, "conv2d: x", layout)
    weight = as_batch4(weight, "conv2d: weight", "C_out, C_in/groups, kh, kw")
    groups = as_int(groups, "groups", 1)
    stride = as_pair(stride, "stride")
    dilation = as_pair(dilation, "dilation")
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
    if method in WINOGRAD_TILES and not winograd_applies((kh, kw), stride, dilation, groups, C):
        raise ConfigError(f"conv2d: method {method!r} (Winograd) needs a 3x3 kernel, stride 1, "
                          f"dilation 1 and groups 1 or {C} (depthwise); got kernel {kh}x{kw}, stride {stride}, "
                          f"dilation {dilation}, groups {groups}: use 'im2col' or 'auto'")
    if method == "auto":
        method = choose_method(C, H, W, C_out, (kh, kw), stride, dilation, groups, N, out_hw)
    if method == "naive":
        xn = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
        y = conv2d_naive(xn, weight, bias, stride, padding, dilation, groups)
        return y if layout == "NCHW" else np.ascontiguousarray(y.transpose(0, 2, 3, 1))
    if N == 0:
        shape = (0, C_out) + out_hw if layout == "NCHW" else (0,) + out_hw + (C_out,)
        return np.empty(shape, np.float32)
    return _DRIVERS[method](x, weight, bias, stride, padding, dilation, groups, layout, out_hw)
