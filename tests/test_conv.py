"""Convolution: methods against the naive reference, scipy and torch; kernels, layouts, errors.

Every method against the naive reference, in both layouts, is
``tests/test_reference_pairs.py`` (the ``conv2d[...]`` pairs of
``tabconv_np.pairs``); this file adds the paths those random cases rarely
reach (chunking, GEMM orientations, 1x1 fast path, ...).  Tolerance: a
float32 sum of K products has error at most about K*u*sum|terms| (u =
2**-24), whatever the summation order, so results are compared elementwise
within ``pairs.TOL_FACTOR * K * 2**-24 * (|x| conv |w| + |b|)``.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tabconv_np import functional as F
from tabconv_np.conv import chunks, direct, im2col
from tabconv_np.conv.layout import to_nchw, to_nhwc
from tabconv_np.errors import ConfigError, ShapeError
from tabconv_np.kernels import direct_kernels, im2col_kernels, layout_kernels, mec_kernels
from tabconv_np.pairs import assert_conv_close, conv_case, conv_error_bound
from tabconv_np.reference import conv2d_naive
from tabconv_np.validate import as_pair

pytestmark = pytest.mark.usefixtures("warm_conv_jit")

METHODS = ("im2col", "mec", "direct", "auto")


def _bound(x, w, b, cfg):
    """Elementwise error bound for float32 results of this convolution."""
    return conv_error_bound(x, w, b, **cfg)


@st.composite
def conv_cases(draw, max_groups=4, max_hw=11, depthwise=None):
    """A random valid convolution ``(x, w, b, cfg)`` (:func:`tabconv_np.pairs.conv_case`)."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return conv_case(lambda lo, hi: draw(st.integers(lo, hi)), np.random.default_rng(seed),
                     max_groups=max_groups, max_hw=max_hw, depthwise=depthwise)


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


# ------------------------------------------------------- against the oracle
@given(conv_cases(depthwise=True, max_groups=6))
@settings(max_examples=30)
def test_depthwise_matches_naive(case):
    x, w, b, cfg = case
    ref = conv2d_naive(x, w, b, **cfg)
    bound = _bound(x, w, b, cfg)
    for method in METHODS:
        assert_conv_close(F.conv2d(x, w, b, method=method, **cfg), ref, bound, method)


@pytest.mark.parametrize("chunk_bytes, min_rows", [(1, 1), (1, 10_000), (1 << 30, 1)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("gijc_rows", [0, 10 ** 9])
def test_chunking_paths(monkeypatch, chunk_bytes, min_rows, layout, gijc_rows):
    """One image per chunk, several, and the whole batch; both lowerings."""
    monkeypatch.setattr(im2col, "GIJC_MIN_ROWS_PER_OUTPUT", gijc_rows)
    monkeypatch.setattr(chunks, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(chunks, "MIN_CHUNK_ROWS", min_rows)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 6, 9, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    cfg = dict(stride=(2, 1), padding=(1, 0, 2, 1), dilation=(2, 1), groups=2)
    ref = conv2d_naive(x, w, b, **cfg)
    bound = _bound(x, w, b, cfg)
    xin = x if layout == "NCHW" else _nhwc(x)
    for method in ("im2col", "mec"):
        got = F.conv2d(xin, w, b, method=method, layout=layout, **cfg)
        if layout == "NHWC":
            got = got.transpose(0, 3, 1, 2)
        assert_conv_close(got, ref, bound, method)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("small_k", [0, 10 ** 6])
@pytest.mark.parametrize("x_shape, c_out", [((3, 4, 2, 2), 32),     # few rows: "left"
                                            ((2, 4, 9, 8), 4)])     # many rows: "right"
def test_gemm_orientations(monkeypatch, layout, groups, small_k, x_shape, c_out):
    """im2col's three GEMM orientations ("image", "left", "right") agree."""
    monkeypatch.setattr(im2col, "SMALL_K", small_k)
    rng = np.random.default_rng(12)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((c_out, x_shape[1] // groups, 3, 2)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    cfg = dict(stride=1, padding=(1, 0, 1, 1), dilation=1, groups=groups)
    ref = conv2d_naive(x, w, b, **cfg)
    got = F.conv2d(x if layout == "NCHW" else _nhwc(x), w, b, method="im2col",
                   layout=layout, **cfg)
    if layout == "NHWC":
        got = got.transpose(0, 3, 1, 2)
    assert_conv_close(got, ref, _bound(x, w, b, cfg))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride", [1, 2, (3, 2)])
def test_pointwise_fast_path(layout, groups, stride):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((6, 4 // groups, 1, 1)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    cfg = dict(stride=stride, padding=0, dilation=1, groups=groups)
    ref = conv2d_naive(x, w, b, **cfg)
    got = F.conv2d(x if layout == "NCHW" else _nhwc(x), w, b, method="im2col",
                   layout=layout, **cfg)
    if layout == "NHWC":
        got = got.transpose(0, 3, 1, 2)
    assert_conv_close(got, ref, _bound(x, w, b, cfg))


@pytest.mark.parametrize("method", ["im2col", "mec", "direct"])
def test_outputs_reading_only_padding(method):
    """Strides larger than the input: output rows that see only padding."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 2, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3, 1, 2)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    cfg = dict(stride=(5, 4), padding=(6, 0, 0, 5), dilation=(1, 3), groups=1)
    ref = conv2d_naive(x, w, b, **cfg)
    assert ref.shape == (2, 2, 2, 2)
    assert_conv_close(F.conv2d(x, w, b, method=method, **cfg), ref, _bound(x, w, b, cfg))


def test_resnet_sized_layer():
    """A layer big enough for the parallel kernels and a per-image GEMM."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 64, 32, 32)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    cfg = dict(stride=1, padding=1, dilation=1, groups=1)
    ref = conv2d_naive(x, w, None, **cfg)
    bound = _bound(x, w, None, cfg)
    for method in ("im2col", "mec", "direct"):
        assert_conv_close(F.conv2d(x, w, None, method=method, **cfg), ref, bound, method)


# ------------------------------------------------------- against scipy/torch
@given(conv_cases(max_groups=1))
@settings(max_examples=30)
def test_matches_scipy_correlate(case):
    """groups=1: each output plane is a sum of 'valid' correlations of the
    padded input with the (zero-dilated) kernel, subsampled by the stride."""
    signal = pytest.importorskip("scipy.signal")
    x, w, b, cfg = case
    sh, sw = as_pair(cfg["stride"], "stride")
    dh, dw = as_pair(cfg["dilation"], "dilation")
    top, bottom, left, right = F.normalize_padding(cfg["padding"])
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    C_out, C, kh, kw = w.shape
    wd = np.zeros((C_out, C, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    wd[:, :, ::dh, ::dw] = w
    ref = np.stack([np.stack([signal.correlate(xp[n], wd[o], mode="valid")[0, ::sh, ::sw]
                              for o in range(C_out)]) for n in range(x.shape[0])])
    if b is not None:
        ref += b.reshape(1, -1, 1, 1)
    bound = _bound(x, w, b, cfg)
    for method in METHODS:
        assert_conv_close(F.conv2d(x, w, b, method=method, **cfg), ref, bound, method)


@given(conv_cases())
@settings(max_examples=40)
def test_matches_torch(case):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    x, w, b, cfg = case
    top, bottom, left, right = F.normalize_padding(cfg["padding"])
    with torch.no_grad():
        xt = tF.pad(torch.from_numpy(x), (left, right, top, bottom))
        ref = tF.conv2d(xt, torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                        stride=cfg["stride"], dilation=cfg["dilation"],
                        groups=cfg["groups"]).numpy()
    bound = 2 * _bound(x, w, b, cfg)      # both sides round
    for method in METHODS:
        assert_conv_close(F.conv2d(x, w, b, method=method, **cfg), ref, bound, method)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), ((2, 4), (2, 1)), (1, 1)])
def test_same_padding_matches_torch(kernel_size, dilation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    kh, kw = as_pair(kernel_size, "k")
    w = rng.standard_normal((4, 3, kh, kw)).astype(np.float32)
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                         padding="same", dilation=dilation).numpy()
    got = F.conv2d(x, w, padding="same", dilation=dilation)
    assert got.shape == ref.shape == (2, 4, 7, 6)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------ serial vs parallel kernels
def _pair_outputs(kernel, args, out_index):
    """``args[out_index]`` as written by ``kernel.parallel`` and by ``kernel.serial``."""
    outs = []
    for fn in (kernel.parallel, kernel.serial):
        a = list(args)
        a[out_index] = np.full_like(a[out_index], np.nan)
        fn(*a)
        outs.append(a[out_index])
    return outs


@pytest.mark.parametrize("shape, k, s, p, d", [
    ((3, 5, 13, 11), (3, 2), (1, 2), (1, 2), (1, 2)),
    ((2, 16, 20, 20), (3, 3), (2, 2), (1, 1), (1, 1)),
])
def test_serial_and_parallel_kernels_agree_bitwise(shape, k, s, p, d):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    N, C, H, W = shape
    kh, kw = k
    Ho, Wo = F.conv_output_size((H, W), k, s, p, d)
    xh = _nhwc(x)
    rows = np.empty((N * Ho * Wo, C * kh * kw), np.float32)
    args = (x, kh, kw, s[0], s[1], p[0], p[1], d[0], d[1], Ho, Wo, rows)
    a, b = _pair_outputs(im2col_kernels.lower_nchw, args, 11)
    assert np.array_equal(a, b)
    args = (xh,) + args[1:]
    c, e = _pair_outputs(im2col_kernels.lower_nhwc, args, 11)
    assert np.array_equal(c, e) and np.array_equal(a, c)

    for G in (1, C):
        a, b = _pair_outputs(im2col_kernels.lower_gijc, (xh, G) + args[1:], 12)
        assert np.array_equal(a, b)
        a2, b2 = _pair_outputs(im2col_kernels.lower_nchw_gijc, (x, G) + args[1:], 12)
        assert np.array_equal(a2, b2) and np.array_equal(a, a2)
        # the same matrix as the (C, kh, kw) rows, columns permuted
        perm = np.arange(C * kh * kw).reshape(G, C // G, kh, kw).transpose(0, 2, 3, 1).ravel()
        assert np.array_equal(a, c[:, perm])
    x3 = x.reshape(N, C, H * W)
    a, b = _pair_outputs(layout_kernels.swap_last2, (x3, np.empty((N, H * W, C), np.float32), 7), 1)
    assert np.array_equal(a, b) and np.array_equal(a, xh.reshape(N, H * W, C))
    np.testing.assert_array_equal(to_nhwc(x), xh)
    np.testing.assert_array_equal(to_nchw(xh), x)

    Hu = (Ho - 1) * s[0] + (kh - 1) * d[0] + 1
    for G in (1, C):
        L = np.empty((G, N * Wo, Hu * kw * (C // G)), np.float32)
        a, b = _pair_outputs(mec_kernels.lower_mec, (xh, G, kw, s[1], p[0], p[1], d[1], Hu, Wo, L), 9)
        assert np.array_equal(a, b)

    for groups in (1, C):
        w = rng.standard_normal((2 * groups, C // groups, kh, kw)).astype(np.float32)
        bias = rng.standard_normal(2 * groups).astype(np.float32)
        out = np.empty((N, 2 * groups, Ho, Wo), np.float32)
        xs = direct.phase_split(x, s, (p[0], p[0], p[1], p[1]), d, k, (Ho, Wo))
        a, b = _pair_outputs(direct_kernels.direct_phases, (xs, w, bias, d[0], d[1], groups, Ho, Wo, out), 8)
        assert np.array_equal(a, b)


# ------------------------------------------------------------------ layouts
@given(conv_cases())
@settings(max_examples=20)
def test_nchw_and_nhwc_agree(case):
    x, w, b, cfg = case
    bound = _bound(x, w, b, cfg)
    for method in ("im2col", "mec", "direct"):
        a = F.conv2d(x, w, b, method=method, **cfg)
        h = F.conv2d(_nhwc(x), w, b, method=method, layout="NHWC", **cfg)
        assert_conv_close(h.transpose(0, 3, 1, 2), a, 2 * bound, method)
    if cfg["groups"] == 1:
        # the lowering itself is layout independent, bit for bit
        kh, kw = w.shape[2:]
        r1, s1 = F.im2col_rows(x, (kh, kw), cfg["stride"], cfg["padding"], cfg["dilation"])
        r2, s2 = F.im2col_rows(_nhwc(x), (kh, kw), cfg["stride"], cfg["padding"],
                               cfg["dilation"], layout="NHWC")
        assert s1 == s2 and np.array_equal(r1, r2)


# ------------------------------------------------------------------ helpers
def test_im2col_rows_layout():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    rows, (N, Ho, Wo) = F.im2col_rows(x, (2, 3), stride=(1, 2), padding=(1, 0, 0, 1),
                                      dilation=1)
    assert (N, Ho, Wo) == (2, 4, 2)
    assert rows.shape == (2 * 4 * 2, 3 * 2 * 3) and rows.dtype == np.float32
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 0), (0, 1)))
    for n in range(N):
        for p in range(Ho):
            for q in range(Wo):
                want = xpad[n, :, p:p + 2, 2 * q:2 * q + 3].reshape(-1)   # (C, kh, kw)
                np.testing.assert_array_equal(rows[(n * Ho + p) * Wo + q], want)
    # rows @ W.T is the convolution
    w = np.random.default_rng(8).standard_normal((4, 3, 2, 3)).astype(np.float32)
    y = (rows @ w.reshape(4, -1).T).reshape(N, Ho, Wo, 4).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(
        y, conv2d_naive(x, w, None, (1, 2), (1, 0, 0, 1)), rtol=1e-5, atol=1e-3)


def test_conv_output_size_and_padding():
    assert F.conv_output_size(32, 3, 1, 1) == (32, 32)
    assert F.conv_output_size((32, 28), 3, 2, 1) == (16, 14)
    assert F.conv_output_size((7, 7), (3, 1), (2, 1), (0, 1, 2, 3), (2, 1)) == (2, 12)
    assert F.conv_output_size(5, 3, padding="same") == (5, 5)
    assert F.normalize_padding(2) == (2, 2, 2, 2)
    assert F.normalize_padding((1, 3)) == (1, 1, 3, 3)
    assert F.normalize_padding([0, 1, 2, 3]) == (0, 1, 2, 3)
    assert F.normalize_padding("valid") == (0, 0, 0, 0)
    assert F.normalize_padding("same", (4, 3), (1, 2)) == (1, 2, 2, 2)
    assert all(type(v) is int for v in F.normalize_padding(np.array([1, 2])))


def test_lowering_workspace_bytes():
    ws = F.lowering_workspace_bytes(64, 32, 32, 3, 3, 1, 1)
    assert ws["im2col"] == 4 * 32 * 32 * 64 * 9
    assert ws["mec"] == 4 * 32 * 34 * 3 * 64
    assert ws["mec"] < ws["im2col"]
    ws8 = F.lowering_workspace_bytes(64, 32, 32, 3, 3, 1, 1, N=8)
    assert ws8 == {k: 8 * v for k, v in ws.items()}
    rows, _ = F.im2col_rows(np.zeros((3, 5, 9, 8), np.float32), (3, 2), (2, 1), (1, 0), 1)
    assert F.lowering_workspace_bytes(5, 9, 8, 3, 2, (2, 1), (1, 0), N=3)["im2col"] == rows.nbytes


def test_dtype_cast_and_empty_batch():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    y64 = F.conv2d(x, w, np.ones(4), padding=1)
    y32 = F.conv2d(x.astype(np.float32), w.astype(np.float32), np.ones(4, np.float32),
                   padding=1)
    assert y64.dtype == np.float32
    np.testing.assert_array_equal(y64, y32)
    for method in ("naive", "im2col", "mec", "direct"):
        e = F.conv2d(np.zeros((0, 3, 6, 6), np.float32), w, method=method, padding=1)
        assert e.shape == (0, 4, 6, 6)
        e = F.conv2d(np.zeros((0, 6, 6, 3), np.float32), w, method=method, layout="NHWC")
        assert e.shape == (0, 4, 4, 4)


@pytest.mark.parametrize("method", ["im2col", "mec", "direct"])
def test_non_contiguous_and_half_inputs(method):
    rng = np.random.default_rng(11)
    base = rng.standard_normal((2, 6, 9, 16)).astype(np.float32)
    x = base[:, ::2, :, ::2]                               # strided view (2, 3, 9, 8)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)[::2, 1:]   # (4, 3, 3, 3) view
    ref = conv2d_naive(x, w, None, 1, 1)
    got = F.conv2d(x, w, None, 1, 1, method=method)
    assert_conv_close(got, ref, _bound(x, w, None, dict(padding=1)))
    x16 = x.astype(np.float16)
    got16 = F.conv2d(x16, w, None, 1, 1, method=method)
    assert got16.dtype == np.float32
    np.testing.assert_allclose(got16, conv2d_naive(x16.astype(np.float32), w, None, 1, 1),
                               rtol=1e-4, atol=1e-4)


def test_auto_picks_direct_for_depthwise():
    assert F.choose_method(32, 8, 8, 32, 3, groups=32) == "direct"
    assert F.choose_method(64, 8, 8, 64, 3, groups=4) == "mec"
    assert F.choose_method(64, 8, 8, 64, 3) == "im2col"
    assert F.choose_method(3, 32, 32, 64, 3) == "direct"            # stem
    assert F.choose_method(3, 32, 32, 64, 3, stride=2) == "im2col"


# --------------------------------------------------------------- bad inputs
X = np.zeros((1, 4, 8, 8), np.float32)
Wt = np.zeros((6, 4, 3, 3), np.float32)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=np.zeros((4, 8, 8), np.float32)), ShapeError, r"x must be 4-D .*\(4, 8, 8\)"),
    (dict(x=np.zeros((1, 4, 8, 8), np.int64)), ShapeError, "floating-point.*int64"),
    (dict(weight=np.zeros((6, 4, 3), np.float32)), ShapeError, r"weight must be 4-D"),
    (dict(weight=np.zeros((6, 3, 3, 3), np.float32)), ShapeError,
     r"expects 3 input channels.*\(1, 4, 8, 8\)"),
    (dict(weight=np.zeros((6, 0, 3, 3), np.float32)), ShapeError, "zero dimension"),
    (dict(groups=3, weight=np.zeros((6, 1, 3, 3), np.float32)), ConfigError,
     "groups=3 does not divide the 4 input"),
    (dict(groups=4, weight=np.zeros((6, 1, 3, 3), np.float32)), ConfigError,
     "groups=4 does not divide the 6 output"),
    (dict(groups=0), ConfigError, "groups must be >= 1"),
    (dict(groups=1.0), ConfigError, "groups must be an int"),
    (dict(stride=0), ConfigError, "stride must be >= 1"),
    (dict(stride=(1, 2, 3)), ConfigError, "stride must be an int or a pair"),
    (dict(stride=1.5), ConfigError, "stride must be an int"),
    (dict(stride=True), ConfigError, "stride must be an int"),
    (dict(dilation=(1, 0)), ConfigError, r"dilation\[1\] must be >= 1"),
    (dict(padding=-1), ConfigError, "padding must be >= 0"),
    (dict(padding=(1, 2, 3)), ConfigError, "padding must be an int"),
    (dict(padding=(0, 0, 0, -2)), ConfigError, r"padding\[3\] \(right\)"),
    (dict(padding="full"), ConfigError, "padding must be"),
    (dict(padding="same", stride=2), ConfigError, "same' needs stride 1"),
    (dict(x=np.zeros((1, 4, 2, 8), np.float32)), ShapeError,
     "kernel 3x3 .* larger than the padded input 2x8"),
    (dict(dilation=4), ShapeError, "spans 9x9"),
    (dict(bias=np.zeros(5, np.float32)), ShapeError, r"bias must have shape \(6,\)"),
    (dict(bias=np.zeros(6, np.int32)), ShapeError, "bias must be a floating-point"),
    (dict(method="fft"), ConfigError, "method must be one of"),
    (dict(layout="CHWN"), ConfigError, "layout must be one of"),
    (dict(layout="NHWC"), ShapeError, "expects 4 input channels"),
])
def test_bad_input_raises(kwargs, exc, match):
    args = dict(x=X, weight=Wt, bias=None)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        F.conv2d(**args)


@pytest.mark.parametrize("call, exc", [
    (lambda: F.im2col_rows(X, 0), ConfigError),
    (lambda: F.im2col_rows(X[0], 3), ShapeError),
    (lambda: F.im2col_rows(X, 9), ShapeError),
    (lambda: F.im2col_rows(X, 3, layout="nchw"), ConfigError),
    (lambda: F.conv_output_size(4, 5), ShapeError),
    (lambda: F.conv_output_size(4, 3, padding="same", stride=2), ConfigError),
    (lambda: F.lowering_workspace_bytes(0, 8, 8, 3, 3), ConfigError),
    (lambda: F.lowering_workspace_bytes(4, 2, 2, 3, 3), ShapeError),
    (lambda: F.normalize_padding("same"), ConfigError),
])
def test_helpers_bad_input(call, exc):
    with pytest.raises(exc):
        call()


# ------------------------------------------------------- interpreted kernels
def test_kernels_interpreted_without_jit():
    """NUMBA_DISABLE_JIT=1 runs the kernels as plain Python (coverage, and a
    check that they are valid Python) on small shapes."""
    script = textwrap.dedent("""
        import numpy as np
        from tabconv_np.functional import conv2d, im2col_rows
        from tabconv_np.reference import conv2d_naive
        rng = np.random.default_rng(0)
        for (N, C, H, W, O, k, s, p, d, g) in [
                (2, 4, 5, 6, 4, (3, 2), (1, 2), (1, 0, 2, 1), (1, 2), 2),
                (1, 3, 6, 5, 3, (2, 3), (2, 1), 1, (2, 1), 3),
                (1, 2, 3, 3, 2, (1, 1), 1, 0, 1, 1)]:
            x = rng.standard_normal((N, C, H, W)).astype(np.float32)
            w = rng.standard_normal((O, C // g, *k)).astype(np.float32)
            b = rng.standard_normal(O).astype(np.float32)
            ref = conv2d_naive(x, w, b, s, p, d, g)
            for m in ("im2col", "mec", "direct"):
                for layout in ("NCHW", "NHWC"):
                    xi = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
                    y = conv2d(xi, w, b, s, p, d, g, m, layout)
                    if layout == "NHWC":
                        y = y.transpose(0, 3, 1, 2)
                    assert np.allclose(y, ref, rtol=1e-4, atol=1e-4), (m, layout)
        print("interpreted-ok")
    """)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "interpreted-ok" in res.stdout
