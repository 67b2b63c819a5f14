"""The registry of (fast, reference) pairs: every fast function and its readable oracle.

:data:`PAIRS` lists, for each fast function of the package, the reference in
:mod:`tabconv_np.reference` that checks it (called with the same arguments),
a generator of valid inputs and the agreement check with its tolerance.
``tests/test_reference_pairs.py`` runs every pair under Hypothesis; every
later engine (a new convolution method, a new encoder, ...) adds its pair
here and is tested with no new test code.

Input generators are ``inputs(draw, rng) -> (args, kwargs)``: ``draw(lo, hi)``
returns an int in ``[lo, hi]`` (the tests pass Hypothesis draws, so that a
failing case shrinks; :func:`random_draw` makes one from a NumPy generator)
and ``rng`` is a :class:`numpy.random.Generator` for array contents.  The
package does not depend on Hypothesis.

Tolerances (``u = 2**-24``, float32 rounding): a float32 sum of ``K``
products has error at most about ``K*u*sum|terms|`` whatever the summation
order, so the float32 results are compared elementwise within
``TOL_FACTOR * K * u * (the same computation on absolute values)``; copies,
integer results and float64 sums done in the same order are compared
exactly.  Each pair's ``tolerance`` says which applies.
"""
from functools import partial
from typing import Callable, NamedTuple

import numpy as np

from . import functional as F
from . import reference as R
from .kernels import pq_kernels as _pq
from .pq import code_dtype, encode_rows, subspace_length
from .kernels import tree_kernels as _tree
from .hashtree import fit_trees
from .tables import table_from_weights
from .tree_tables import TreeConv2d
from .conv.strassen import strassen
from .geometry import ConvGeometry
from .functional import winograd_applies
from .plan import PreparedConv, live_taps
from . import int8 as _int8
from .validate import as_padding
from .lcnn import LCNNConv2d
from .rsdtr import CORES, RSDTRConv2d
from .sparse import SparseConv2d, csr
from . import binary as _binary

#: Slack on the ``K*u`` rounding-error bounds.
TOL_FACTOR = 4.0
U = 2.0 ** -24


class Pair(NamedTuple):
    """One fast function and the reference that checks it."""

    #: Short unique name (the test id).
    name: str
    #: The fast function, called as ``fast(*args, **kwargs)``.
    fast: Callable
    #: The reference, called with the same arguments.
    reference: Callable
    #: ``inputs(draw, rng) -> (args, kwargs)``: a random valid input.
    inputs: Callable
    #: ``check(got, want, args, kwargs)``: raises AssertionError when they disagree.
    check: Callable
    #: The agreement ``check`` asserts, in words.
    tolerance: str


def random_draw(rng):
    """A ``draw(lo, hi)`` for :attr:`Pair.inputs` taking integers from ``rng``."""
    return lambda lo, hi: int(rng.integers(lo, hi + 1))


def run(pair, draw, rng):
    """Generate one input, call both sides and check them; returns ``(args, kwargs)``."""
    args, kwargs = pair.inputs(draw, rng)
    got = pair.fast(*args, **kwargs)
    want = pair.reference(*args, **kwargs)
    pair.check(got, want, args, kwargs)
    return args, kwargs


def _assert_within(got, want, bound, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    worst = np.max(err - bound) if err.size else 0
    assert worst <= 0, f"{what}: error exceeds the bound by {worst:.3g}"


def _assert_equal(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert np.array_equal(got, want), f"{what}: values differ"


# ------------------------------------------------------------- convolution
def conv_case(draw, rng, max_groups=4, max_hw=11, depthwise=None, string_padding=False):
    """A random valid convolution ``(x, weight, bias, cfg)``, x NCHW float32.

    ``cfg`` holds ``stride``, ``padding``, ``dilation``, ``groups`` in the
    forms :func:`~tabconv_np.functional.conv2d` accepts (ints or pairs;
    padding as int, pair or 4-tuple, and with ``string_padding`` also
    ``"valid"``, or ``"same"`` when the stride is 1).  ``depthwise`` None:
    drawn.
    """
    groups = draw(1, max_groups)
    if depthwise is None:
        depthwise = bool(draw(0, 1)) and groups > 1
    Cg = 1 if depthwise else draw(1, 4)
    Cog = draw(1, 3)
    N = draw(1, 3)
    kh, kw = draw(1, 4), draw(1, 4)
    sh, sw = draw(1, 3), draw(1, 3)
    dh, dw = draw(1, 3), draw(1, 3)
    forms = ["int", "pair", "four"] + (["valid", "same"] if string_padding else [])
    form = forms[draw(0, len(forms) - 1)]
    if form == "same" and (sh, sw) != (1, 1):
        form = "valid"
    if form == "int":
        p = draw(0, 3)
        padding, pads = p, (p, p, p, p)
    elif form == "pair":
        ph, pw = draw(0, 3), draw(0, 3)
        padding, pads = (ph, pw), (ph, ph, pw, pw)
    elif form == "four":
        pads = tuple(draw(0, 3) for _ in range(4))
        padding = pads
    else:
        padding = form
        pads = F.normalize_padding(form, (kh, kw), (dh, dw))
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    H0 = max(1, eh - pads[0] - pads[1])
    W0 = max(1, ew - pads[2] - pads[3])
    H, W = draw(H0, H0 + max_hw), draw(W0, W0 + max_hw)
    x = rng.standard_normal((N, groups * Cg, H, W)).astype(np.float32)
    w = rng.standard_normal((groups * Cog, Cg, kh, kw)).astype(np.float32)
    b = rng.standard_normal(groups * Cog).astype(np.float32) if draw(0, 1) else None
    cfg = dict(stride=(sh, sw) if sh != sw or draw(0, 1) else sh,
               padding=padding, dilation=(dh, dw) if dh != dw else dh, groups=groups)
    return x, w, b, cfg


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _conv_inputs(draw, rng):
    x, w, b, cfg = conv_case(draw, rng, string_padding=True)
    layout = ("NCHW", "NHWC")[draw(0, 1)]
    return (x if layout == "NCHW" else _nhwc(x), w, b), dict(cfg, layout=layout)


def conv_error_bound(x, weight, bias=None, **kwargs):
    """Elementwise bound on the float32 error of ``conv2d(x, weight, bias, **kwargs)``:
    ``TOL_FACTOR * K * u * (|x| conv |w| + |b|) + 1e-7`` with ``K = C/groups*kh*kw + 1``."""
    absref = R.conv2d_naive(np.abs(x), np.abs(weight), None if bias is None else np.abs(bias),
                            **kwargs)
    K = weight.shape[1] * weight.shape[2] * weight.shape[3] + 1
    return TOL_FACTOR * K * U * absref.astype(np.float64) + 1e-7


def assert_conv_close(got, want, bound, what=""):
    """``got`` is float32, of ``want``'s shape, and within ``bound`` of it elementwise."""
    _assert_within(got, want, bound, what)


def _check_conv(got, want, args, kwargs):
    assert_conv_close(got, want, conv_error_bound(*args, **kwargs), f"conv2d {kwargs}")


def _check_exact(got, want, args, kwargs):
    _assert_equal(got, want, "result")


def _im2col_inputs(draw, rng):
    x, w, _, cfg = conv_case(draw, rng, max_groups=1, string_padding=True)
    layout = ("NCHW", "NHWC")[draw(0, 1)]
    return ((x if layout == "NCHW" else _nhwc(x), w.shape[2:], cfg["stride"], cfg["padding"],
             cfg["dilation"], layout), {})


def _check_im2col(got, want, args, kwargs):
    assert got[1] == want[1], f"output size {got[1]} != {want[1]}"
    _assert_equal(got[0], want[0], "rows")


def prepared_conv(x, weight, bias, stride, padding, dilation, residual, lo, hi, method="im2col"):
    """:class:`~tabconv_np.plan.PreparedConv` made for ``x`` (NHWC) and run once."""
    g = ConvGeometry(weight.shape[1], weight.shape[0], weight.shape[2:], stride, padding, dilation)
    conv = PreparedConv(weight, bias, g.stride, g.padding, g.dilation,
                        (x.shape[3],) + x.shape[1:3], (lo, hi), method)
    return conv(x, residual)


def _prepared_conv_inputs(draw, rng):
    if draw(0, 2) == 0:                                          # a third Winograd-shaped
        N, C, C_out, H, W = draw(1, 2), draw(1, 5), draw(1, 5), draw(3, 9), draw(3, 9)
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = rng.standard_normal((C_out, C, 3, 3)).astype(np.float32)
        b = rng.standard_normal(C_out).astype(np.float32) if draw(0, 1) else None
        cfg = dict(stride=1, padding=tuple(draw(0, 1) for _ in range(4)), dilation=1)
    else:
        x, w, b, cfg = conv_case(draw, rng, max_groups=1, max_hw=6, string_padding=True)
    y = R.conv2d_naive(x, w, b, cfg["stride"], cfg["padding"], cfg["dilation"])
    residual = _nhwc(rng.standard_normal(y.shape).astype(np.float32)) if draw(0, 1) else None
    lo, hi = ((-np.inf, np.inf), (0.0, np.inf), (0.0, 6.0), (-1.0, 0.5))[draw(0, 3)]
    g = ConvGeometry(w.shape[1], w.shape[0], w.shape[2:], cfg["stride"], cfg["padding"], cfg["dilation"])
    live = PreparedConv(w, None, g.stride, g.padding, g.dilation, (x.shape[1],) + x.shape[2:]).kernel
    methods = ["im2col"] + (list(WINOGRAD_SLACK) if winograd_applies(live, g.stride, g.dilation) else [])
    return ((_nhwc(x), w, b, cfg["stride"], cfg["padding"], cfg["dilation"], residual, lo, hi),
            {"method": methods[draw(0, len(methods) - 1)]})


def _check_prepared_conv(got, want, args, kwargs):
    x, w, b, stride, padding, dilation, residual, _, _ = args
    absref = R.conv2d_naive(np.abs(x), np.abs(w), None if b is None else np.abs(b), stride, padding,
                            dilation, layout="NHWC").astype(np.float64)
    if residual is not None:
        absref += np.abs(residual)
    K = w.shape[1] * w.shape[2] * w.shape[3] + 2
    method = kwargs["method"]
    bound = TOL_FACTOR * K * U * absref + 1e-7
    if method in WINOGRAD_TILE:        # on the live 3x3 taps (plan.live_taps), as PreparedConv runs it
        g = ConvGeometry(w.shape[1], w.shape[0], w.shape[2:], stride, padding, dilation)
        (H, W), (Ho, Wo), (pt, _, pl, _) = x.shape[1:3], want.shape[1:3], g.padding
        i0, i1 = live_taps(H, Ho, w.shape[2], 1, pt, 1)
        j0, j1 = live_taps(W, Wo, w.shape[3], 1, pl, 1)
        pads = (pt - i0, Ho + 2 - H - pt + i0, pl - j0, Wo + 2 - W - pl + j0)
        bound += winograd_error_bound(x, w[:, :, i0:i1, j0:j1], b, padding=pads, method=method,
                                      layout="NHWC")
    _assert_within(got, want, bound, f"prepared conv ({method})")


#: Rounding-error slack of the Winograd methods over the K*u bound of
#: :func:`winograd_error_bound`: their transforms add and scale partial sums
#: (F(4x4)'s entries reach 8).  Output tile size of each method.
WINOGRAD_SLACK = {"winograd": 8.0, "winograd4": 64.0}
WINOGRAD_TILE = {"winograd": 2, "winograd4": 4}


def winograd_error_bound(x, weight, bias=None, *, padding, method, groups=1, layout="NCHW"):
    """Bound on the float32 error of a 3x3 stride-1 Winograd convolution, per tile.

    Winograd is not componentwise stable: the transforms mix all inputs of a
    tile, so an output whose own terms are small can carry the rounding of
    its tile's large inputs.  The bound is therefore normwise over the tile::

        |fast - ref| <= slack * K * u * (max|x| over the tile's window * sum|w[co]| + |b[co]|) + 1e-7

    with ``K = C/groups*9 + 1`` and the window the ``(m+2) x (m+2)`` input
    patch (all channels of the group) read by the ``m x m`` output tile that
    holds the output; tiles start at output (0, 0).  It is never below the
    componentwise ``K*u*(|x| conv |w|)``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) (or NHWC with ``layout="NHWC"``)
    weight : ndarray, shape (C_out, C/groups, 3, 3)
    bias : ndarray, shape (C_out,), optional
    padding : int, pair or (top, bottom, left, right)
        A negative bottom or right pad crops the input there.
    method : "winograd" (F(2x2, 3x3)) or "winograd4" (F(4x4, 3x3))

    Returns
    -------
    ndarray of float64, shape of the convolution's output (in ``layout``)
    """
    m = WINOGRAD_TILE[method]
    a = np.abs(np.asarray(x, np.float64))
    if layout == "NHWC":
        a = a.transpose(0, 3, 1, 2)
    top, bottom, left, right = padding if isinstance(padding, tuple) and len(padding) == 4 \
        else as_padding(padding)
    a = a[:, :, :a.shape[2] + min(bottom, 0), :a.shape[3] + min(right, 0)]   # negative: cropped
    top, bottom, left, right = top, max(bottom, 0), left, max(right, 0)
    N, C, H, W = a.shape
    C_out = weight.shape[0]
    Ho, Wo = H + top + bottom - 2, W + left + right - 2
    th, tw = -(-Ho // m), -(-Wo // m)
    a = np.pad(a, ((0, 0), (0, 0), (top, th * m + 2 - H - top), (left, tw * m + 2 - W - left)))
    a = a.reshape(N, groups, C // groups, *a.shape[2:]).max(axis=2)           # (N, G, Hp, Wp)
    windows = np.lib.stride_tricks.sliding_window_view(a, (m + 2, m + 2), axis=(2, 3))
    tile_max = windows[:, :, ::m, ::m].max(axis=(-2, -1))                      # (N, G, th, tw)
    tile_max = tile_max.repeat(m, axis=2).repeat(m, axis=3)[:, :, :Ho, :Wo]
    per_out = tile_max.repeat(C_out // groups, axis=1)                          # (N, C_out, Ho, Wo)
    scale = np.abs(np.asarray(weight, np.float64)).sum(axis=(1, 2, 3))
    bound = per_out * scale[:, None, None]
    if bias is not None:
        bound += np.abs(np.asarray(bias, np.float64))[:, None, None]
    K = weight.shape[1] * 9 + 1
    bound = WINOGRAD_SLACK[method] * K * U * bound + 1e-7
    return bound.transpose(0, 2, 3, 1) if layout == "NHWC" else bound


def _winograd_inputs(method):
    def inputs(draw, rng):
        N, C, C_out = draw(1, 3), draw(1, 6), draw(1, 5)
        groups = C if draw(0, 2) == 0 else 1                 # a third depthwise
        if groups > 1:
            C_out = C * draw(1, 2)                           # channel multiplier 1 or 2
        pads = tuple(draw(0, 2) for _ in range(4))
        H = draw(max(1, 3 - pads[0] - pads[1]), 13)
        W = draw(max(1, 3 - pads[2] - pads[3]), 13)
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = rng.standard_normal((C_out, C // groups, 3, 3)).astype(np.float32)
        b = rng.standard_normal(C_out).astype(np.float32) if draw(0, 1) else None
        layout = ("NCHW", "NHWC")[draw(0, 1)]
        return ((x if layout == "NCHW" else _nhwc(x), w, b),
                dict(padding=pads, layout=layout, method=method, groups=groups))
    return inputs


def strassen_bound(k, levels, max_a, max_b):
    """Normwise bound on Strassen's float32 error: ``2 * 3**levels * (k + 4) * u * max|A| * max|B|``.

    Strassen is not componentwise stable (a small entry of the product can
    carry the error of large block sums), so the bound is on the largest
    error against the largest possible entry.  Measured worst over random
    shapes: 0.78, 1.13, 1.64 times ``(k + 4) * u * max|A| * max|B|`` at 1, 2, 3 levels.
    """
    return 2 * 3 ** levels * (k + 4) * U * max_a * max_b


def _strassen_inputs(draw, rng):
    n, k, p = draw(1, 40), draw(1, 40), draw(1, 40)
    A = rng.standard_normal((n, k)).astype(np.float32)
    B = rng.standard_normal((k, p)).astype(np.float32)
    return (A, B, draw(0, 3), draw(1, 8)), {}


def _check_strassen_matmul(got, want, args, kwargs):
    A, B, levels, _ = args
    bound = strassen_bound(A.shape[1], levels, np.abs(A).max(initial=0), np.abs(B).max(initial=0))
    _assert_within(got, want, np.full(want.shape, bound + 1e-7), "strassen")


def _check_strassen(got, want, args, kwargs):
    x, w, b = args
    K = w.shape[1] * w.shape[2] * w.shape[3]
    bound = strassen_bound(K + 1, 1, np.abs(x).max(initial=0), np.abs(w).max(initial=0))
    bound += 2 * U * (0 if b is None else np.abs(b).max())
    _assert_within(got, want, np.full(want.shape, bound + 1e-7), "conv2d strassen")


def _check_winograd(got, want, args, kwargs):
    assert_conv_close(got, want, winograd_error_bound(*args, **kwargs), kwargs["method"])


def _conv2d_same_args(x, weight, bias=None, *, padding, layout, method, groups=1):
    """The reference with the fast side's arguments (``method`` is the fast side's choice)."""
    return R.conv2d_naive(x, weight, bias, 1, padding, groups=groups, layout=layout)


# ------------------------------------------------- product quantization
def _pq_shape(draw, max_n=70, max_d=40, max_c=6):
    N, D = draw(1, max_n), draw(1, max_d)
    C = draw(1, min(max_c, D))
    return N, D, C, subspace_length(D, C)


def _encode_inputs(draw, rng):
    N, D, C, Ds = _pq_shape(draw)
    K = draw(257, 300) if draw(0, 3) == 0 else draw(1, 40)      # uint16 and uint8 codes
    X = rng.standard_normal((N, D)).astype(np.float32)
    P = rng.standard_normal((C, K, Ds)).astype(np.float32)
    for _ in range(draw(0, 2)):                                   # exact ties: first index wins
        P[:, draw(0, K - 1)] = P[:, draw(0, K - 1)]
    return (X, P), {}


def _check_encode(got, want, args, kwargs):
    X, P = args
    C, K, _ = P.shape
    assert got.shape == want.shape, f"codes shape {got.shape} != {want.shape}"
    assert got.dtype == code_dtype(K), f"codes dtype {got.dtype}"
    assert not got.size or int(got.max()) < K, f"codes out of range [0, {K})"
    d = R.subspace_distances(X, P)
    n, c = np.indices(got.shape)
    chosen, best = d[n, c, got.astype(np.int64)], d[n, c, want]
    # a nearest prototype up to float32 rounding of the scores ...
    assert np.all(chosen <= best + 1e-4 * (1 + best)), "a code is not a nearest prototype"
    # ... the same index wherever the nearest is clearly unique ...
    srt = np.sort(d, axis=2)
    clear = (srt[..., 1] - srt[..., 0] > 1e-3 * (1 + srt[..., 0])) if K > 1 else np.ones(got.shape, bool)
    assert np.array_equal(got.astype(np.int64)[clear], want[clear]), "codes differ"
    # ... and never a prototype equal to an earlier one of its subspace
    same = np.all(P[:, :, None, :] == P[:, None, :, :], axis=-1)         # (C, K, K)
    repeat = np.tril(same, -1).any(axis=2)                               # (C, K)
    assert not repeat[c, got.astype(np.int64)].any(), "a tie did not go to the first prototype"


def _table_inputs(draw, rng):
    _, D, C, Ds = _pq_shape(draw)
    K, M = draw(1, 40), draw(1, 20)
    P = rng.standard_normal((C, K, Ds)).astype(np.float32)
    W = rng.standard_normal((D, M)).astype(np.float32)
    return (P, W), {}


def _check_table(got, want, args, kwargs):
    P, W = args
    bound = TOL_FACTOR * (P.shape[2] + 1) * U * R.build_table_naive(np.abs(P), np.abs(W))
    _assert_within(got, want, bound.astype(np.float64), "table")


def lookup_tables(codes, table, bias=None):
    """The ``lookup`` kernel as a function: ``y[n, m] = sum_c table[c, codes[n, c], m] + bias[m]``.

    Codes must be in range (not checked); ``table`` float32 C-contiguous.
    """
    N, M = codes.shape[0], table.shape[2]
    out = np.empty((N, M), np.float32)
    has_bias = bias is not None
    b = bias if has_bias else np.zeros(0, np.float32)
    _pq.lookup.pick(N * M * table.shape[0])(codes, table, b, has_bias, out)
    return out


def _lookup_inputs(draw, rng):
    N, C, K, M = draw(1, 60), draw(1, 8), draw(1, 300), draw(1, 12)
    codes = rng.integers(0, K, (N, C)).astype(code_dtype(K))
    T = rng.standard_normal((C, K, M)).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32) if draw(0, 1) else None
    return (codes, T, bias), {}


def _check_lookup(got, want, args, kwargs):
    codes, T, bias = args
    absref = R.lookup_naive(codes, np.abs(T), None if bias is None else np.abs(bias))
    bound = TOL_FACTOR * (T.shape[0] + 1) * U * absref.astype(np.float64)
    _assert_within(got, want, bound, "lookup")


def kmeanspp_seeds(X, x2, first, u):
    """The ``kmeanspp`` kernel as a function: row indices (int64, ``len(u)``) of the centres."""
    out = np.empty(len(u), np.int64)
    _pq.kmeanspp.serial(X, x2, first, u, out)        # sequential: no parallel entry to pick
    return out


def _kmeanspp_inputs(draw, rng):
    N, d, K = draw(1, 60), draw(1, 6), draw(1, 12)
    # small integers: every distance and running sum is exact on both sides
    X = rng.integers(-3, 4, (N, d)).astype(np.float32)
    return (X, np.einsum("nd,nd->n", X, X), draw(0, N - 1), rng.random(K)), {}


def centroid_sums(X, labels, K):
    """The ``centroid_sums`` kernel as a function: ``(sums (K, d) float64, counts (K,) int64)``."""
    sums, counts = np.empty((K, X.shape[1]), np.float64), np.empty(K, np.int64)
    _pq.centroid_sums.serial(X, labels, sums, counts)    # sequential: no parallel entry to pick
    return sums, counts


def _centroid_inputs(draw, rng):
    N, d, K = draw(1, 80), draw(1, 8), draw(1, 10)
    X = rng.standard_normal((N, d)).astype(np.float32)
    return (X, rng.integers(0, K, N).astype(np.int64), K), {}


def _check_centroids(got, want, args, kwargs):
    _assert_equal(got[0], want[0], "sums")
    _assert_equal(got[1], want[1], "counts")


def tree_encode_rows(X, split_cols, thresholds):
    """The tree ``encode_rows`` kernel as a function: codes (N, C) uint8."""
    out = np.empty((len(X), len(split_cols)), np.uint8)
    _tree.encode_rows.pick(out.size * 4)(X, split_cols, thresholds, out)
    return out


def _trees(draw, rng, D, C):
    """Random trees over ``D`` columns whose thresholds often equal input values (ties)."""
    cols = rng.integers(0, D, (C, 4)).astype(np.int32)
    thr = np.round(rng.standard_normal((C, 16)), 1).astype(np.float32)
    return cols, thr


def _tree_encode_inputs(draw, rng):
    N, D = draw(1, 50), draw(1, 30)
    C = draw(1, 12)
    X = np.round(rng.standard_normal((N, D)), 1).astype(np.float32)     # values tie thresholds
    return (X, *_trees(draw, rng, D, C)), {}


def tree_lookup(codes, table8, step, bias):
    """The tree ``lookup`` kernel as a function: float32 (N, M)."""
    out = np.empty((len(codes), table8.shape[2]), np.float32)
    _tree.lookup.pick(out.size * table8.shape[0])(codes, table8, step, bias, out)
    return out


def _tree_lookup_inputs(draw, rng):
    N, C, M = draw(1, 40), draw(1, 300), draw(1, 20)      # C > 257: more than one uint16 block
    codes = rng.integers(0, 16, (N, C)).astype(np.uint8)
    T8 = rng.integers(0, 256, (C, 16, M)).astype(np.uint8)
    if draw(0, 3) == 0:
        T8[:] = 255                                        # the accumulation bound's extreme
    step = rng.uniform(1e-3, 1, M).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    return (codes, T8, step, bias), {}


def _check_tree_lookup(got, want, args, kwargs):
    codes, T8, step, bias = args
    bound = TOL_FACTOR * U * (np.abs(want) + np.abs(bias.astype(np.float64))) + 1e-30
    _assert_within(got, want, bound, "tree lookup")


def tree_conv(x, split_cols, thresholds, table8, step, bias, kernel_size, stride=1, padding=0,
              dilation=1, layout="NCHW"):
    """``TreeConv2d.forward`` with the given parameters."""
    C_in = x.shape[1] if layout == "NCHW" else x.shape[3]
    layer = TreeConv2d(C_in, table8.shape[2], kernel_size, stride, padding, dilation, len(split_cols))
    for k, v in (("split_cols", split_cols), ("thresholds", thresholds), ("table", table8),
                 ("step", step), ("bias", bias)):
        layer.params[k][...] = v
    return layer.forward(x, layout)


def _tree_conv_inputs(draw, rng):
    (x, w, _b, cfg), layout = conv_case(draw, rng, max_groups=1), ("NCHW", "NHWC")[draw(0, 1)]
    kh, kw = w.shape[2:]
    C_in = x.shape[1]
    D = C_in * kh * kw
    C = draw(1, D)
    x = np.round(x, 1)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    M = draw(1, 9)
    T8 = rng.integers(0, 256, (C, 16, M)).astype(np.uint8)
    step = rng.uniform(1e-3, 1, M).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    cols, thr = _trees(draw, rng, D, C)
    kwargs = {k: cfg[k] for k in ("stride", "padding", "dilation")}
    return (x, cols, thr, T8, step, bias, (kh, kw)), dict(kwargs, layout=layout)


def _check_tree_lookup_conv(got, want, args, kwargs):
    bias = args[5]
    shape = (1, -1, 1, 1) if kwargs["layout"] == "NCHW" else (1, 1, 1, -1)
    bound = TOL_FACTOR * U * (np.abs(want) + np.abs(bias.astype(np.float64)).reshape(shape)) + 1e-30
    _assert_within(got, want, bound, "tree conv")


def fit_tree_arrays(X, n_codebooks, candidates=4):
    """:func:`~tabconv_np.hashtree.fit_trees` as the reference returns it:
    ``(split_cols, thresholds, prototypes)``."""
    trees = fit_trees(X, n_codebooks, candidates)
    return trees.split_cols, trees.thresholds, trees.prototypes


def _fit_trees_inputs(draw, rng):
    """Rows that exercise every branch of the learning: ties (rounded values, constant
    columns, duplicate rows, -0.0 next to +0.0), neighbouring float32 values (midpoints that
    round onto the right value), tiny buckets, wide subspaces (pairwise column sums)."""
    N = draw(2, 60)
    D = draw(1, 200) if draw(0, 9) == 0 else draw(1, 30)
    C = draw(1, D)
    Ds = subspace_length(D, C)
    C = subspace_length(D, Ds)                      # no empty subspace: C = ceil(D / Ds)
    X = rng.standard_normal((N, D)) * 10.0 ** draw(-3, 3)
    kind = draw(0, 4)
    if kind == 1:
        X = np.round(X, 0)                                        # many ties, zeros of both signs
        X[rng.random(X.shape) < 0.3] = -0.0
    elif kind == 2:                                               # neighbouring float32 values
        base = np.float32(rng.standard_normal())
        steps = rng.integers(0, 4, X.shape)
        X = np.full(X.shape, base, np.float32)
        for k in range(3):
            X = np.where(steps > k, np.nextafter(X, np.float32(np.inf)), X)
    elif kind == 3:
        X[:, rng.random(D) < 0.5] = rng.standard_normal()         # constant columns
        X[rng.integers(0, N, N // 2)] = X[0]                      # duplicate rows
    X = X.astype(np.float32)
    return (X, C), dict(candidates=draw(1, 6))


def _check_trees(got, want, args, kwargs):
    for name, g, w in zip(("split_cols", "thresholds", "prototypes"), got, want):
        _assert_equal(g, w, name)
        if g.dtype == np.float32:                                # the sign of zero too
            _assert_equal(g.view(np.uint32), w.view(np.uint32), f"{name} (bits)")


# ------------------------------------------------------------- int8
def _int8_quantize_inputs(draw, rng):
    mode = ("asymmetric", "symmetric")[draw(0, 1)]
    x = (rng.standard_normal(draw(0, 300)) * 10.0 ** draw(-2, 2)).astype(np.float32)
    if draw(0, 2) == 0:                  # values on the rounding ties and beyond the range
        x = (rng.integers(-600, 600, x.shape) / 2).astype(np.float32)
        scale = np.float32(1)
    else:
        scale = np.float32(rng.uniform(1e-3, 1) * 10.0 ** draw(-2, 2))
    zp = draw(0, 255) if mode == "asymmetric" else 0
    return (x, scale, zp, mode), {}


def _int8_conv_inputs(draw, rng):
    """A quantised batch and int8 weights: geometry from :func:`conv_case` (1x1 often), up to
    ``C = 40`` channels, sometimes every value at its extreme (the int32 sums' worst case)."""
    x, w, _, cfg = conv_case(draw, rng, max_groups=1)
    kh, kw = (1, 1) if draw(0, 2) == 0 else w.shape[2:]
    if (kh, kw) == (1, 1):
        cfg = dict(cfg, dilation=1)
    N, _, H, W = x.shape
    C, M = draw(1, 40), draw(1, 9)
    mode = ("asymmetric", "symmetric")[draw(0, 1)]
    dtype, lo, hi = _int8.ACTIVATIONS[mode]
    xq = rng.integers(lo, hi + 1, (N, C, H, W)).astype(dtype)
    wq = rng.integers(-127, 128, (M, kh, kw, C)).astype(np.int8)
    zp = draw(lo, hi) if mode == "asymmetric" else 0
    if draw(0, 4) == 0:
        xq[:], wq[:], zp = (hi if mode == "asymmetric" else -127), -127, 0
    ws = rng.uniform(1e-3, 1e-1, M).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    layout = ("NCHW", "NHWC")[draw(0, 1)]
    if layout == "NHWC":
        xq = np.ascontiguousarray(xq.transpose(0, 2, 3, 1))
    pads = as_padding(cfg["padding"], (kh, kw), cfg["dilation"])
    kwargs = dict(stride=cfg["stride"], padding=pads, dilation=cfg["dilation"], layout=layout)
    return (xq, zp, wq, ws, np.float32(rng.uniform(1e-3, 1)), bias), kwargs
def lcnn_conv(x, dictionary, indices, coefs, bias, stride=1, padding=0, dilation=1, layout="NCHW"):
    """``LCNNConv2d.forward`` with the given parameters."""
    C_out, kh, kw, s = indices.shape
    layer = LCNNConv2d(dictionary.shape[1], C_out, (kh, kw), stride, padding, dilation,
                       len(dictionary), s)
    for k, v in (("dictionary", dictionary), ("indices", indices), ("coefs", coefs), ("bias", bias)):
        layer.params[k][...] = v
    return layer.forward(x, layout)


def _lcnn_inputs(draw, rng):
    (x, w, _b, cfg), layout = conv_case(draw, rng, max_groups=1), ("NCHW", "NHWC")[draw(0, 1)]
    C_out, C_in, kh, kw = w.shape
    k = draw(1, 9)
    s = draw(1, k)
    D = rng.standard_normal((k, C_in)).astype(np.float32)
    idx = rng.integers(0, k, (C_out, kh, kw, s)).astype(np.int32)
    coefs = rng.standard_normal((C_out, kh, kw, s)).astype(np.float32)
    bias = rng.standard_normal(C_out).astype(np.float32)
    kwargs = {k: cfg[k] for k in ("stride", "padding", "dilation")}
    return (x if layout == "NCHW" else _nhwc(x), D, idx, coefs, bias), dict(kwargs, layout=layout)


def _check_lcnn(got, want, args, kwargs):
    x, D, idx, coefs, bias = args
    absref = R.lcnn_conv_naive(np.abs(x), np.abs(D), idx, np.abs(coefs), np.abs(bias), **kwargs)
    K = D.shape[1] + idx[0].size + 1
    _assert_within(got, want, TOL_FACTOR * K * U * absref.astype(np.float64) + 1e-7, "lcnn conv")


def rsdtr_conv(x, core_out, core_in, core_h, core_w, bias, stride=1, padding=0, dilation=1,
               layout="NCHW"):
    """``RSDTRConv2d.forward`` with the given cores and bias."""
    cores = (core_out, core_in, core_h, core_w)
    layer = RSDTRConv2d(core_in.shape[1], core_out.shape[1], (core_h.shape[1], core_w.shape[1]), stride,
                        padding, dilation, (core_in.shape[0], core_h.shape[0], core_w.shape[0],
                                            core_out.shape[0]))
    for name, v in zip(CORES + ("bias",), cores + (bias,)):
        layer.params[name][...] = v
    return layer.forward(x, layout)


def _rsdtr_inputs(draw, rng):
    (x, w, _b, cfg), layout = conv_case(draw, rng, max_groups=1), ("NCHW", "NHWC")[draw(0, 1)]
    C_out, C_in, kh, kw = w.shape
    r0, r1, r2, r3 = (draw(1, 4) for _ in range(4))
    cores = tuple(rng.standard_normal(s).astype(np.float32) for s in
                  ((r3, C_out, r0), (r0, C_in, r1), (r1, kh, r2), (r2, kw, r3)))
    bias = rng.standard_normal(C_out).astype(np.float32)
    kwargs = {k: cfg[k] for k in ("stride", "padding", "dilation")}
    return (x if layout == "NCHW" else _nhwc(x), *cores, bias), dict(kwargs, layout=layout)


def _check_rsdtr(got, want, args, kwargs):
    x, core_out, core_in, core_h, core_w, bias = args
    absref = R.rsdtr_conv_naive(*(np.abs(a) for a in args), **kwargs)
    r0, r1, r2, r3 = core_in.shape[0], core_h.shape[0], core_w.shape[0], core_out.shape[0]
    K = core_in.shape[1] + r1 * core_h.shape[1] + r2 * core_w.shape[1] + r0 * r3 + 1
    _assert_within(got, want, TOL_FACTOR * K * U * absref.astype(np.float64) + 1e-7, "rsdtr conv")



def _sparse_layer(data, indices, indptr, bias, weight_shape, stride=1, padding=0, dilation=1):
    C_out, C, kh, kw = weight_shape
    layer = SparseConv2d(C, C_out, (kh, kw), stride, padding, dilation, len(data))
    for k, v in (("data", data), ("indices", indices), ("indptr", indptr), ("bias", bias)):
        layer.params[k][...] = v
    return layer


def sparse_conv(x, *csr_args, layout="NCHW", **geometry):
    """``SparseConv2d.forward`` with the given CSR weights, bias and weight shape."""
    return _sparse_layer(*csr_args, **geometry).forward(x, layout)


def _sparse_inputs(draw, rng):
    """A conv case with its weight pruned to a random density (0 to 100%), as CSR."""
    (x, w, _b, cfg), layout = conv_case(draw, rng, max_groups=1), ("NCHW", "NHWC")[draw(0, 1)]
    Wl = w.reshape(len(w), -1) * (rng.random((len(w), w[0].size)) < draw(0, 4) / 4)
    bias = rng.standard_normal(len(w)).astype(np.float32)
    kwargs = {k: cfg[k] for k in ("stride", "padding", "dilation")}
    return (x if layout == "NCHW" else _nhwc(x), *csr(Wl), bias, w.shape), dict(kwargs, layout=layout)


def _check_sparse(got, want, args, kwargs):
    x, *csr_args = args
    W = _sparse_layer(*csr_args).dense()
    assert_conv_close(got, want, conv_error_bound(x, W, csr_args[3], **kwargs), "sparse conv")


# ------------------------------------------------------------- binary and ternary
def _bit_planes(draw, rng, M, D):
    """Random packed sign bits and, half the time, a ternary mask (None otherwise)."""
    signs = rng.random((M, D)) < 0.5
    mask = rng.random((M, D)) < draw(0, 4) / 4 if draw(0, 1) else None
    return _binary.pack_bits(signs), None if mask is None else _binary.pack_bits(mask)


def _xnor_inputs(draw, rng):
    """A conv case (up to 40 channels: rows of several words, ragged last words) with exact zeros in
    the input (binarised to -1, as padding is), random bit planes, both layouts."""
    (x, w, _b, cfg), layout = conv_case(draw, rng, max_groups=1), ("NCHW", "NHWC")[draw(0, 1)]
    kh, kw = w.shape[2:]
    C, M = (draw(1, 40), draw(1, 9)) if draw(0, 1) else (w.shape[1], w.shape[0])
    x = rng.standard_normal((x.shape[0], C) + x.shape[2:]).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = 0
    kwargs = {k: cfg[k] for k in ("stride", "padding", "dilation")}
    return (x if layout == "NCHW" else _nhwc(x), *_bit_planes(draw, rng, M, C * kh * kw),
            (M, C, kh, kw)), dict(kwargs, layout=layout)


def binary_conv(x, weight_sign, weight_mask, weight_scale, bias, weight_shape, stride=1, padding=0, dilation=1,
                layout="NCHW"):
    """``BinaryConv2d.forward`` (float inputs) with the given bit planes, scales and bias."""
    M, C, kh, kw = weight_shape
    layer = _binary.BinaryConv2d(C, M, (kh, kw), stride, padding, dilation,
                                 "binary" if weight_mask is None else "ternary", "float")
    for k, v in (("weight_sign", weight_sign), ("weight_mask", weight_mask), ("weight_scale", weight_scale),
                 ("bias", bias)):
        if v is not None:
            layer.params[k][...] = v
    return layer.forward(x, layout)


def _binary_conv_inputs(draw, rng):
    (x, w, _b, cfg), layout = conv_case(draw, rng, max_groups=1), ("NCHW", "NHWC")[draw(0, 1)]
    M, C, kh, kw = w.shape
    scale = rng.uniform(1e-3, 1, M).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    kwargs = {k: cfg[k] for k in ("stride", "padding", "dilation")}
    return (x if layout == "NCHW" else _nhwc(x), *_bit_planes(draw, rng, M, C * kh * kw), scale, bias,
            w.shape), dict(kwargs, layout=layout)


def _check_binary_conv(got, want, args, kwargs):
    x, sign, mask, scale, bias, shape = args
    W = R.signed_weights(sign, mask, shape) * scale.reshape(-1, 1, 1, 1)
    assert_conv_close(got, want, conv_error_bound(x, W, bias, **kwargs), "binary conv")


_CONV_TOL = ("elementwise |fast - ref| <= 4*K*2**-24*(|x| conv |w| + |b|) + 1e-7, "
             "K = C/groups*kh*kw + 1 (float32 sums in any order vs float64)")

#: Every (fast, reference) pair of the package.  A new engine adds its own.
PAIRS = [
    *(Pair(f"conv2d[{m}]", partial(F.conv2d, method=m), R.conv2d_naive, _conv_inputs,
           _check_conv, _CONV_TOL) for m in ("im2col", "mec", "direct", "auto")),
    Pair("conv2d[naive]", partial(F.conv2d, method="naive"), R.conv2d_naive, _conv_inputs,
         _check_exact, "bitwise: the public API's naive method is the reference itself"),
    Pair("prepared_conv", prepared_conv, R.conv_epilogue_naive, _prepared_conv_inputs,
         _check_prepared_conv, "as conv2d plus one rounding for the residual sum: "
         "|fast - ref| <= 4*(K + 2)*2**-24*(|x| conv |w| + |b| + |residual|) + 1e-7, plus for "
         "Winograd the tile-wise winograd_error_bound on the live taps, the clamp being "
         "non-expansive; taps dropped for reading only padding change nothing"),
    Pair("conv2d[winograd]", F.conv2d, _conv2d_same_args, _winograd_inputs("winograd"), _check_winograd,
         "per tile (winograd_error_bound): |fast - ref| <= 8*(K + 1)*2**-24*(max|x| over the "
         "tile's input window * sum|w| + |b|) + 1e-7 for F(2x2, 3x3), K = 9*C/groups "
         "(measured worst 0.35 of that over 4,000 random cases)"),
    Pair("conv2d[winograd4]", F.conv2d, _conv2d_same_args, _winograd_inputs("winograd4"), _check_winograd,
         "as conv2d[winograd] with 64 for F(4x4, 3x3) (measured worst 8.7); a componentwise "
         "bound does not hold: the transforms mix a tile's inputs"),
    Pair("strassen", strassen, R.matmul_naive, _strassen_inputs, _check_strassen_matmul,
         "normwise: max|fast - ref| <= 2*3**levels*(k + 4)*2**-24*max|A|*max|B| (pairs.strassen_bound; "
         "cutoffs down to 1, so small shapes recurse, odd sizes padded)"),
    Pair("conv2d[strassen]", partial(F.conv2d, method="strassen"), R.conv2d_naive, _conv_inputs,
         _check_strassen, "as the strassen pair, one level, with K = C/groups*kh*kw + 1 "
         "(the plumbing: groups, layouts, padding)"),
    Pair("im2col_rows", F.im2col_rows, R.im2col_rows_naive, _im2col_inputs, _check_im2col,
         "bitwise rows and equal (N, Ho, Wo): both copy input values and zeros"),
    Pair("encode", encode_rows, R.encode_naive, _encode_inputs, _check_encode,
         "codes of the fast side's dtype; each a nearest prototype within 1e-4*(1 + d) of "
         "the float64 distance; the reference's index wherever the nearest is unique by "
         "1e-3*(1 + d); exact ties to the first prototype"),
    Pair("build_table", table_from_weights, R.build_table_naive, _table_inputs, _check_table,
         "elementwise |fast - ref| <= 4*(Ds + 1)*2**-24*(|P| . |W|)"),
    Pair("lookup", lookup_tables, R.lookup_naive, _lookup_inputs, _check_lookup,
         "elementwise |fast - ref| <= 4*(C + 1)*2**-24*(sum_c |T[c, code]| + |bias|)"),
    Pair("kmeanspp", kmeanspp_seeds, R.kmeanspp_naive, _kmeanspp_inputs, _check_exact,
         "equal indices, on small-integer rows where every distance is exact (on other "
         "data the float32 dot products can break sampling near-ties differently)"),
    Pair("centroid_sums", centroid_sums, R.centroid_sums_naive, _centroid_inputs,
         _check_centroids, "bitwise: both add the rows in order, in float64"),
    Pair("tree_encode", tree_encode_rows, R.tree_encode_naive, _tree_encode_inputs, _check_exact,
         "equal codes, inputs tying thresholds included (ties go left)"),
    Pair("tree_lookup", tree_lookup, R.tree_lookup_naive, _tree_lookup_inputs, _check_tree_lookup,
         "|fast - ref| <= 4*2**-24*(|ref| + |bias|): the integer sums are exact (uint16 blocks of "
         "257 codebooks widened to int32, all-255 tables included), only the float32 multiply-add "
         "rounds"),
    Pair("tree_conv", tree_conv, R.tree_conv_naive, _tree_conv_inputs, _check_tree_lookup_conv,
         "as tree_lookup, with codes read from the tensor (both layouts, padding, stride, "
         "dilation) equal to those of the im2col rows"),
    Pair("fit_trees", fit_tree_arrays, R.fit_trees_naive, _fit_trees_inputs, _check_trees,
         "bitwise split columns, thresholds and prototypes: both sum in float64 in the same "
         "order (rows one after another from +0.0; a subspace's columns in NumPy's pairwise "
         "order, reference.pairwise_sum), compare in float32 and break ties the same way"),
    Pair("int8_quantize", _int8.quantize, R.quantize_naive, _int8_quantize_inputs, _check_exact,
         "bitwise: the same float32 multiply, round-half-even and clamp"),
    Pair("int8_conv", _int8.conv_quantized, R.int8_conv_naive, _int8_conv_inputs, _check_exact,
         "bitwise: the integer sums are exact on both sides (int32 vs int64, extremes included), "
         "then the same float32 multiply and add"),
    Pair("lcnn_conv", lcnn_conv, R.lcnn_conv_naive, _lcnn_inputs, _check_lcnn,
         "elementwise |fast - ref| <= 4*K*2**-24*(|x| conv W_abs + |b|) + 1e-7, K = C_in + kh*kw*s + 1, "
         "W_abs[o, :, i, j] = sum_t |coef| |D[idx]| (float32 dictionary maps, then float32 lookup "
         "sums, vs the float64 dense conv of the rebuilt filters)"),
    Pair("sparse_conv", sparse_conv, R.sparse_conv_naive, _sparse_inputs, _check_sparse,
         "elementwise within the dense conv bound of the same weights (float32 sums in CSR order)"),
    Pair("rsdtr_conv", rsdtr_conv, R.rsdtr_conv_naive, _rsdtr_inputs, _check_rsdtr,
         "elementwise |fast - ref| <= 4*K*2**-24*(|x| conv W_abs + |b|) + 1e-7, K = C_in + r1*kH + "
         "r2*kW + r0*r3 + 1 (the four float32 sublayers' sums), W_abs the kernel rebuilt from |cores|"),
    Pair("xnor_conv", _binary.xnor_conv, R.xnor_conv_naive, _xnor_inputs, _check_exact,
         "bitwise int32: XNOR (ternary: and the mask) + popcount equals the float conv of the +-1 "
         "({-1, 0, 1}) tensors exactly, padding and inputs <= 0 binarised to -1"),
    Pair("binary_conv", binary_conv, R.binary_conv_naive, _binary_conv_inputs, _check_binary_conv,
         "elementwise within the dense conv bound of the weights alpha*T (float32 BLAS sums, then the "
         "scale: one more rounding, inside the bound's slack)"),
]
