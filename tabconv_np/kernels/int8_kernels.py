"""int8 kernels: activation quantisation, and int8 x int8 -> int32 products with requantisation.

Quantisation of an activation tensor (per tensor, scale ``s``, zero point ``z``)::

    q = clamp(rint(x * (1/s)) + z, lo, hi)

in float32 (``rint`` rounds half to even), as uint8 (``lo, hi = 0, 255``:
asymmetric, ``z`` in [0, 255]) or int8 (``lo, hi = -127, 127``: symmetric,
``z = 0``).  Weights are int8 in the restricted range [-127, 127], one scale
per output channel ``m``.

The product of a lowered row ``a`` (``K`` quantised activations) with the
weight row ``w[m]`` is summed exactly in int32, the zero point removed with
one integer subtraction of the precomputed ``zw[m] = z * sum_k w[m, k]``, and
the result requantised to float32 with one multiply-add::

    acc[m] = sum_k int32(a[k]) * int32(w[m, k]) - zw[m]
    y[m]   = float32(acc[m]) * scale[m] + bias[m]        scale[m] = s * s_w[m]

Requantisation uses **float scales**, not an integer multiplier and shift:
the package's layers hand float32 tensors to each other (residual sums,
pooling, the float classifier refit), so the int32 sum is turned into the
float output once, and the next int8 layer quantises its own input with its
own calibrated scale.  An integer multiplier + shift gives the same value up
to its rounding; it pays off only where the whole network stays in integers
(hardware without a float unit).  On the CPUs the package targets (ARM with
NEON, x86) one float32 multiply-add per output costs no more than the
integer multiply, add and shift it would replace, and float scales keep the
layer readable: ``y = s * s_w * acc + bias``.

No overflow: ``|a[k] * w[m, k]| <= 255 * 127``, so any ``K <= MAX_K``
(66,313) sums within int32; the layers refuse larger ``K``.

Layout for vectorisation: the rows ``a`` (``(R, K)``, lowered with columns in
(kh, kw, C) order) and the weights ``w`` (``(M, K)``) are both contiguous
along ``K``, so the inner loop is an integer dot product (widening
multiplies and adds, which LLVM vectorises without fast-math: integer sums
are associative).  A product fits int16 (``255 * 127 = 32385``) and every
partial sum is cast back to int32, which lets LLVM use 16-bit multiplies
widened into 32-bit lanes instead of Numba's default 64-bit integers
(measured 2.3x faster on a 3136 x 576 x 64 product, 1 thread, on an x86 with
AVX-512 VNNI, where LLVM emits ``vpdpwssd``, 16-bit pair dot products).
LLVM does not emit the 8-bit dot products (``vpdpbusd``, ARM ``sdot``) from
this loop, so there an int8 product runs at about the speed of a float32
BLAS product, not faster (``bench/methods.py`` measures both side by side).
A task takes a tile of :data:`CHUNK` rows and about
:data:`WEIGHT_TILE_BYTES` of weight rows (L2-resident), and multiplies them
:data:`ROWS` rows by 2 weight rows at a time (8 sums per pass), so that every
value loaded serves several dot products.

Parallel over tiles of outputs; each output is computed by one thread
in a fixed order, so the serial and parallel entries agree bitwise.  The
readable versions are :func:`tabconv_np.reference.quantize_naive` and
:func:`tabconv_np.reference.int8_conv_naive`.  No validation here (see
:mod:`tabconv_np.int8`).
"""
import numba
import numpy as np
from numba import prange

from ._jit import CACHE, kernel

#: Largest ``K`` (products per output) whose int32 sum cannot overflow: ``(2**31 - 1) // (255*127)``.
MAX_K = (2 ** 31 - 1) // (255 * 127)
#: 1.5 * 2**23: ``(v + MAGIC) - MAGIC`` rounds a float32 ``|v| < 2**22`` half to even.
MAGIC = np.float32(12582912.0)
#: Rows per inner step: each weight row is read once for this many dot products.
ROWS = 4
#: Rows per task (a multiple of ROWS).
CHUNK = 32
#: Bytes of weights per task, about: they stay in L2 while the task's rows pass by.
WEIGHT_TILE_BYTES = 64 * 1024


def _quantize(x, inv_scale, zp, lo, hi, out):
    """``out[i] = clamp(rint(x[i] * inv_scale) + zp, lo, hi)``.

    x : float32 (L,), finite; inv_scale, zp, lo, hi : float32 scalars
    (integers in value but for ``inv_scale``); out : uint8 or int8 (L,).

    Clamped first, to ``[lo - zp, hi - zp]`` (the same result: ``rint`` is
    monotone and keeps integers), then rounded half to even by adding and
    subtracting :data:`MAGIC` = 1.5 * 2**23 in float32, which is ``rint`` for
    ``|v| < 2**22`` and vectorises where ``np.rint`` compiles to a library
    call per element (measured 15x faster on 4.8 M values).
    """
    L = x.shape[0]
    a, b = lo - zp, hi - zp
    blk = 16384
    for t in prange((L + blk - 1) // blk):
        for i in range(t * blk, min(L, (t + 1) * blk)):
            v = min(max(x[i] * inv_scale, a), b)
            out[i] = ((v + MAGIC) - MAGIC) + zp


def _put_py(out, i, m, s, zw, scale, bias):
    """``out[i, m]`` = the requantised sum ``s``: ``float32(s - zw[m]) * scale[m] + bias[m]``."""
    out[i, m] = np.float32(s - zw[m]) * scale[m] + bias[m]


_put = numba.njit(inline="always", cache=CACHE)(_put_py)


def _dot_rows_py(A, r0, r1, W, m0, m1, zw, scale, bias, out, o0):
    """Rows ``r0 .. r1 - 1`` (at most ``ROWS``) of ``A`` times rows ``m0 .. m1 - 1`` of ``W``,
    requantised, into ``out[o0 + (r - r0), m]``.

    With a full group of 4 rows, two weight rows at a time: 8 sums per pass over ``k``, each
    loaded value used twice or four times (measured 1.4-1.8x faster than one weight row at a time).
    """
    K = W.shape[1]
    nr = r1 - r0
    m = m0
    if nr == ROWS:
        a0, a1, a2, a3 = A[r0], A[r0 + 1], A[r0 + 2], A[r0 + 3]
        while m + 1 < m1:
            w, v = W[m], W[m + 1]
            s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = np.int32(0)
            for k in range(K):
                wk, vk = np.int16(w[k]), np.int16(v[k])
                b0, b1, b2, b3 = np.int16(a0[k]), np.int16(a1[k]), np.int16(a2[k]), np.int16(a3[k])
                s0 = np.int32(s0 + np.int32(b0 * wk))
                s1 = np.int32(s1 + np.int32(b1 * wk))
                s2 = np.int32(s2 + np.int32(b2 * wk))
                s3 = np.int32(s3 + np.int32(b3 * wk))
                t0 = np.int32(t0 + np.int32(b0 * vk))
                t1 = np.int32(t1 + np.int32(b1 * vk))
                t2 = np.int32(t2 + np.int32(b2 * vk))
                t3 = np.int32(t3 + np.int32(b3 * vk))
            _put(out, o0, m, s0, zw, scale, bias)
            _put(out, o0 + 1, m, s1, zw, scale, bias)
            _put(out, o0 + 2, m, s2, zw, scale, bias)
            _put(out, o0 + 3, m, s3, zw, scale, bias)
            _put(out, o0, m + 1, t0, zw, scale, bias)
            _put(out, o0 + 1, m + 1, t1, zw, scale, bias)
            _put(out, o0 + 2, m + 1, t2, zw, scale, bias)
            _put(out, o0 + 3, m + 1, t3, zw, scale, bias)
            m += 2
    for mm in range(m, m1):                       # a last weight row, or fewer than 4 rows
        w = W[mm]
        for r in range(nr):
            a = A[r0 + r]
            s = np.int32(0)
            for k in range(K):
                s = np.int32(s + np.int32(np.int16(a[k]) * np.int16(w[k])))
            _put(out, o0 + r, mm, s, zw, scale, bias)


_dot_rows = numba.njit(inline="always", cache=CACHE)(_dot_rows_py)


def _tiles_py(R, M, K):
    """``(weight rows per tile, row tiles, weight tiles)`` of an ``(R, K) x (M, K)`` product."""
    mb = max(ROWS, min(M, WEIGHT_TILE_BYTES // max(K, 1)))
    return mb, (R + CHUNK - 1) // CHUNK, (M + mb - 1) // mb


_tiles = numba.njit(inline="always", cache=CACHE)(_tiles_py)


def _gemm(A, W, zw, scale, bias, out):
    """Requantised product of quantised rows with int8 weights (the im2col-lowered conv, linear).

    A : uint8 or int8 (R, K), C-contiguous rows (quantised activations, lowered);
    W : int8 (M, K) in [-127, 127]; zw : int32 (M,), ``z * W.sum(1)``;
    scale, bias : float32 (M,); out : float32 (R, M)::

        out[r, m] = float32(sum_k A[r, k]*W[m, k] - zw[m]) * scale[m] + bias[m]

    One task per tile of :data:`CHUNK` rows x ``mb`` weight rows (``mb*K`` about
    :data:`WEIGHT_TILE_BYTES`, so that the tile's weights stay in L2 while its
    rows pass by, :data:`ROWS` at a time); tiles over the weights give threads
    work even when there are few rows (batch 1, the last ResNet stage).
    """
    R = A.shape[0]
    M, K = W.shape
    mb, nr, nm = _tiles(R, M, K)
    for t in prange(nr * nm):
        c0 = (t // nm) * CHUNK
        m0 = (t % nm) * mb
        c1, m1 = min(R, c0 + CHUNK), min(M, m0 + mb)
        for r0 in range(c0, c1, ROWS):
            _dot_rows(A, r0, min(c1, r0 + ROWS), W, m0, m1, zw, scale, bias, out, r0)


def _conv1x1(xq, sh, sw, Ho, Wo, W, zw, scale, bias, out):
    """A 1x1 convolution (no padding, stride ``(sh, sw)``) read straight from the quantised tensor.

    xq : uint8 or int8 (N, H, W, C), C-contiguous (NHWC); Ho, Wo : output size;
    W : int8 (M, C); zw, scale, bias as in :func:`_gemm`; out : float32
    (N*Ho*Wo, M), rows in (n, ho, wo) order.  No lowering: the pixel read by
    output ``(n, ho, wo)`` is ``xq[n, ho*sh, wo*sw]``, ``C`` contiguous bytes
    (gathered into a local tile when the stride is not 1).  Tiles as in :func:`_gemm`.
    """
    N, H, Wd, C = xq.shape
    R = N * Ho * Wo
    M = W.shape[0]
    flat = xq.reshape(N * H * Wd, C)
    mb, nr, nm = _tiles(R, M, C)
    for t in prange(nr * nm):
        c0 = (t // nm) * CHUNK
        m0 = (t % nm) * mb
        c1, m1 = min(R, c0 + CHUNK), min(M, m0 + mb)
        if sh == 1 and sw == 1 and H == Ho and Wd == Wo:        # output pixel r is input pixel r
            for r0 in range(c0, c1, ROWS):
                _dot_rows(flat, r0, min(c1, r0 + ROWS), W, m0, m1, zw, scale, bias, out, r0)
        else:
            loc = np.empty((CHUNK, C), xq.dtype)
            for r in range(c0, c1):
                n = r // (Ho * Wo)
                ho = (r // Wo) % Ho
                wo = r - (n * Ho + ho) * Wo
                src = flat[(n * H + ho * sh) * Wd + wo * sw]
                dst = loc[r - c0]
                for c in range(C):
                    dst[c] = src[c]
            for r0 in range(c0, c1, ROWS):
                _dot_rows(loc, r0 - c0, min(c1, r0 + ROWS) - c0, W, m0, m1, zw, scale, bias, out, r0)


quantize = kernel(_quantize)
gemm = kernel(_gemm)
conv1x1 = kernel(_conv1x1)
