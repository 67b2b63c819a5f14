"""Hash-tree (MADDNESS) encoding and 8-bit lookup kernels.

A codebook ``c`` is a balanced binary tree of depth 4: level ``t`` compares
one input value, column ``cols[c, t]`` of the row, with the threshold of the
current node, heap-indexed ``thr[c, 2**t - 1 + node]``, and goes right when
the value is greater (``node = 2*node + (v > thr)``).  The leaf reached,
0..15, is the code.  Four comparisons per codebook, no multiplies.

The 8-bit tables hold ``T[c, k, m]`` as uint8; an output is
``y[n, m] = scale[m] * sum_c T[c, code[n, c], m] + bias[m]``.  Accumulation
runs in uint16 over blocks of :data:`ACC_BLOCK` codebooks, then widens to
int32: ``255 * 257 = 65535`` is the largest uint16, so a block of at most 257
codebooks can never overflow, and ``int32`` holds ``255 * C`` for any
``C < 8.4e6``.  The inner loop adds a contiguous uint8 table row over the
outputs ``m``: the loop LLVM turns into vector adds.

The convolution's encoder reads the four values of a codebook straight from the
layer's zero-padded input tensor (NCHW or NHWC): codebook ``c``, level ``t``
reads channel ``ci[c, t]`` at offset ``(di[c, t], dj[c, t])`` from the
window's top-left corner, one precomputed element offset, so no im2col matrix
is built and no value needs a bounds check (padding first measured 1.5-1.9x
faster than checking every read, on the ResNet-18 layers at batch 32).

No validation here (see :mod:`tabconv_np.tree_tables`); each output element
is computed by one thread in a fixed order, so serial and parallel entries
agree bitwise.  The readable versions are in :mod:`tabconv_np.reference`.
"""
import numba
import numpy as np
from numba import prange

from ._jit import CACHE, kernel
from .epilogue_kernels import finish

#: Codebooks accumulated in uint16 before widening (``255 * 257 = 65535``).
ACC_BLOCK = 257
#: Tree depth (K = 2**DEPTH = 16 leaves).
DEPTH = 4


def _walk_row_py(X, n, c, cols, thr):
    node = 0
    for t in range(DEPTH):
        v = X[n, cols[c, t]]
        node = 2 * node + (1 if v > thr[c, (1 << t) - 1 + node] else 0)
    return node


_walk_row = numba.njit(inline="always", cache=CACHE)(_walk_row_py)


def _encode_rows(X, cols, thr, out):
    """``out[n, c]`` = leaf of row ``n`` in tree ``c``.

    X (N, D) float32; cols (C, 4) int32 column indices; thr (C, 16) float32
    heap-indexed node thresholds; out (N, C) uint8.
    """
    N, C = out.shape
    for n in prange(N):
        for c in range(C):
            out[n, c] = _walk_row(X, n, c, cols, thr)


def _encode_window_py(xf, base, off, thr, out_row):
    """Codes of one window: codebook ``c`` reads ``xf[base + off[c, t]]`` at level ``t``."""
    for c in range(out_row.shape[0]):
        thc = thr[c]
        offc = off[c]
        node = 0
        for t in range(DEPTH):
            node = 2 * node + (1 if xf[base + offc[t]] > thc[(1 << t) - 1 + node] else 0)
        out_row[c] = node


_encode_window = numba.njit(inline="always", cache=CACHE)(_encode_window_py)


def _accumulate_py(code_row, T, acc, acc16):
    """``acc[m] = sum_c T[c, code_row[c], m]`` (int32), in uint16 blocks of ACC_BLOCK codebooks."""
    C = code_row.shape[0]
    M = T.shape[2]
    acc[:] = 0
    for c0 in range(0, C, ACC_BLOCK):
        acc16[:] = 0
        for c in range(c0, min(C, c0 + ACC_BLOCK)):
            row = T[c, code_row[c]]
            for m in range(M):
                acc16[m] += row[m]
        for m in range(M):
            acc[m] += acc16[m]


_accumulate = numba.njit(inline="always", cache=CACHE)(_accumulate_py)


def _encode_padded(xf, off, thr, s_img, s_row, s_col, Ho, Wo, out):
    """Codes of every output position of a convolution, read from its zero-padded input.

    xf : float32 (L,), the padded input tensor flattened (NCHW or NHWC: the
        offsets say which); off : (C, 4) int64, element offset of each level's
        value from its window's first element (``ci*s_c + di*s_h + dj*s_w``);
        thr : (C, 16); s_img, s_row, s_col : elements between images, between
        output rows (stride included) and between output columns;
        out : (N*Ho*Wo, C) uint8, rows in (n, ho, wo) order.

    The input is padded by the caller, so no value needs a bounds check: the
    window of ``(n, ho, wo)`` starts at ``n*s_img + ho*s_row + wo*s_col``.
    """
    for r in prange(out.shape[0]):
        n = r // (Ho * Wo)
        ho = (r // Wo) % Ho
        wo = r - (n * Ho + ho) * Wo
        _encode_window(xf, n * s_img + ho * s_row + wo * s_col, off, thr, out[r])


def _lookup(codes, T, scale, bias, out):
    """``out[n, m] = scale[m] * sum_c T[c, codes[n, c], m] + bias[m]``.

    codes (N, C) uint8 < 16; T (C, 16, M) uint8; scale, bias (M,) float32; out (N, M) float32.
    """
    M = T.shape[2]
    for n in prange(codes.shape[0]):
        acc = np.empty(M, np.int32)
        acc16 = np.empty(M, np.uint16)
        _accumulate(codes[n], T, acc, acc16)
        for m in range(M):
            out[n, m] = np.float32(acc[m]) * scale[m] + bias[m]


#: Most output rows per task of :func:`_encode_lookup`: a block's codes (rows x C bytes) stay in L1.
BLOCK = 32


def _encode_lookup(xf, off, thr, s_img, s_row, s_col, Ho, Wo, T, scale, bias, res, has_res, lo, hi,
                   blk, out):
    """:func:`_encode_padded`, :func:`_lookup` and the epilogue ``clamp(y + res, lo, hi)`` in one
    parallel region, ``blk`` output rows per task (one wake-up of the threads per layer instead of
    three).  Arguments as in those kernels; res (rows, M) read when ``has_res``.  The same
    operations in the same order: equal to the three passes (up to the sign of a zero).
    """
    R, M = out.shape
    C = off.shape[0]
    for b in prange((R + blk - 1) // blk):
        r0 = b * blk
        r1 = min(R, r0 + blk)
        codes = np.empty((blk, C), np.uint8)
        acc = np.empty(M, np.int32)
        acc16 = np.empty(M, np.uint16)
        for r in range(r0, r1):
            n = r // (Ho * Wo)
            ho = (r // Wo) % Ho
            wo = r - (n * Ho + ho) * Wo
            _encode_window(xf, n * s_img + ho * s_row + wo * s_col, off, thr, codes[r - r0])
        for r in range(r0, r1):
            _accumulate(codes[r - r0], T, acc, acc16)
            o = out[r]
            for m in range(M):
                o[m] = finish(np.float32(acc[m]) * scale[m] + bias[m], res[r, m] if has_res else np.float32(0),
                              lo, hi)


encode_rows = kernel(_encode_rows)
encode_padded = kernel(_encode_padded)
encode_lookup = kernel(_encode_lookup)
lookup = kernel(_lookup)
