"""im2col lowering + BLAS GEMM convolution.

The lowering turns every output position into one row of a matrix::

    rows[(n*Ho + oh)*Wo + ow, (c*kh + i)*kw + j]
        = x[n, c, oh*sh - pt + i*dh, ow*sw - pl + j*dw]      (0 outside x)

so ``rows`` has shape ``(N*Ho*Wo, C*kh*kw)`` and column order ``(C, kh, kw)``,
the same as ``weight.reshape(C_out, -1)``.  The convolution is then one matrix
product per group: ``rows[:, group columns] @ weight_g.reshape(C_out_g, -1).T``.
This exact row layout is also what the table-lookup (TabConv/PQ) layers
encode, so ``lower_nchw`` / ``lower_nhwc`` build it for
:func:`tabconv_np.functional.im2col_rows`.

The convolution itself (:func:`conv2d_im2col`) lowers to the same matrix with
its columns permuted to (group, kh, kw, C/group) order (:func:`_lower_gijc`),
from NHWC data: every kernel tap is then one contiguous copy of the channels,
several times faster to build, and the weight is permuted to match.

Kernels here do no validation: the caller passes float32 arrays of the right
shapes, non-negative paddings and a preallocated ``out``.  Inner copy loops
run over views indexed from 0, so that Numba can prove the index
non-negative, drop its negative-index wraparound test and vectorise
(RESEARCH.md section 5 lists the other Numba rules followed here).
"""
import numba
import numpy as np
from numba import prange

from ._jit import CACHE, kernel, pick

#: Lowering buffer size per chunk (bytes).  The batch is lowered and multiplied
#: a few images at a time, so the lowered rows are still in cache (L3 here)
#: when the GEMM reads them and the workspace stays bounded, instead of a full
#: ``N*Ho*Wo x C*kh*kw`` matrix going through main memory.  Not smaller:
#: every chunk is one more parallel region, and a region waits for its
#: slowest thread, which is expensive when other processes share the cores.
CHUNK_BYTES = 4 << 20
#: A chunk holds at least this many rows when the batch allows it: small GEMMs
#: (a few output positions per image in late ResNet stages) waste BLAS's
#: packing of the weight matrix.
MIN_CHUNK_ROWS = 256
#: NCHW convolutions with at most this many columns per group (e.g. 3x3
#: stems on 1-3 channels) multiply image by image straight into NCHW.
SMALL_K = 64
#: The (group, kh, kw, C) lowering (with a permuted copy of the weight) is
#: used when the batch has at least this many output positions per output
#: channel; below, the (C, kh, kw) lowering with the weight as it is.
GIJC_MIN_ROWS_PER_OUTPUT = 2


def _valid_range_py(off, step, limit, count):
    """``[lo, hi)``: the ``t in range(count)`` with ``0 <= t*step + off < limit``."""
    lo = 0
    if off < 0:
        lo = (-off + step - 1) // step
    rem = limit - off
    hi = 0 if rem <= 0 else (rem + step - 1) // step
    lo = min(lo, count)
    hi = max(lo, min(hi, count))
    return lo, hi


_valid_range = numba.njit(inline="always", cache=CACHE)(_valid_range_py)


def _lower_nchw(x, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, out):
    """Lower an NCHW batch to im2col rows, columns in (C, kh, kw) order.

    Parameters
    ----------
    x : float32 array (N, C, H, W)
    kh, kw, sh, sw, pt, pl, dh, dw : int
        Kernel size, stride, top/left zero padding, dilation.
    Ho, Wo : int
        Output size (bottom/right padding are implied by it).
    out : float32 array (N*Ho*Wo, C*kh*kw), written

    Notes
    -----
    Parallel over output image rows ``(n, oh)``: each owns ``Wo`` rows of
    ``out``, written row by row.
    """
    N, C, H, W = x.shape
    for t in prange(N * Ho):
        n = t // Ho
        oh = t - n * Ho
        r0 = t * Wo
        for ow in range(Wo):
            r = r0 + ow
            iw0 = ow * sw - pl
            # kernel columns j with 0 <= iw0 + j*dw < W
            jlo, jhi = _valid_range(iw0, dw, W, kw)
            for c in range(C):
                for i in range(kh):
                    ih = oh * sh - pt + i * dh
                    base = (c * kh + i) * kw
                    if ih < 0 or ih >= H:
                        for j in range(kw):
                            out[r, base + j] = 0.0
                    else:
                        for j in range(jlo):
                            out[r, base + j] = 0.0
                        for j in range(jlo, jhi):
                            out[r, base + j] = x[n, c, ih, iw0 + j * dw]
                        for j in range(jhi, kw):
                            out[r, base + j] = 0.0
    return out


def _lower_nhwc(x, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, out):
    """Lower an NHWC batch to im2col rows, columns in (C, kh, kw) order.

    Parameters
    ----------
    x : float32 array (N, H, W, C)
    kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo : int
        As in :func:`_lower_nchw`.
    out : float32 array (N*Ho*Wo, C*kh*kw), written (same rows as
        :func:`_lower_nchw` on the NCHW version of x)

    Notes
    -----
    Reads run along ``C`` (contiguous in x); writes have stride ``kh*kw``
    within one row of ``out`` (which stays in L1).
    """
    N, H, W, C = x.shape
    khw = kh * kw
    for t in prange(N * Ho):
        n = t // Ho
        oh = t - n * Ho
        r0 = t * Wo
        for ow in range(Wo):
            orow = out[r0 + ow]
            for i in range(kh):
                ih = oh * sh - pt + i * dh
                for j in range(kw):
                    iw = ow * sw - pl + j * dw
                    dst = orow[i * kw + j::khw]          # C entries, stride kh*kw
                    if ih < 0 or ih >= H or iw < 0 or iw >= W:
                        dst[:] = 0.0
                    else:
                        src = x[n, ih, iw]
                        for c in range(C):
                            dst[c] = src[c]
    return out


def _lower_gijc(x, G, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, out):
    """Lower an NHWC batch to rows with columns in (group, kh, kw, C/group) order.

    The convolution's own lowering: every ``(i, j)`` tap of a group is one
    contiguous copy of ``Cg`` channels (a memcpy), several times faster than
    the (C, kh, kw) order, which scatters each channel ``kh*kw`` apart.

    Parameters
    ----------
    x : float32 C-contiguous array (N, H, W, C)
    G : int
        Groups; ``Cg = C // G``.
    kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo : int
        As in :func:`_lower_nchw`.
    out : float32 array (N*Ho*Wo, C*kh*kw), written::

        out[(n*Ho + oh)*Wo + ow, ((g*kh + i)*kw + j)*Cg + c]
            = x[n, oh*sh - pt + i*dh, ow*sw - pl + j*dw, g*Cg + c]   (0 outside)
    """
    N, H, W, C = x.shape
    Cg = C // G
    for t in prange(N * Ho):
        n = t // Ho
        oh = t - n * Ho
        for ow in range(Wo):
            orow = out[t * Wo + ow]
            for g in range(G):
                c0 = g * Cg
                for i in range(kh):
                    ih = oh * sh - pt + i * dh
                    for j in range(kw):
                        iw = ow * sw - pl + j * dw
                        base = ((g * kh + i) * kw + j) * Cg
                        # copies through views indexed from 0: numba then
                        # knows the index is >= 0, drops the negative-index
                        # wraparound test and vectorises (4x faster)
                        dst = orow[base:base + Cg]
                        if ih < 0 or ih >= H or iw < 0 or iw >= W:
                            dst[:] = 0.0
                        else:
                            src = x[n, ih, iw, c0:c0 + Cg]
                            for c in range(Cg):
                                dst[c] = src[c]
    return out


def _lower_nchw_gijc(x, G, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, out):
    """:func:`_lower_gijc` reading an NCHW batch: the same rows, one region.

    Parameters
    ----------
    x : float32 C-contiguous array (N, C, H, W)
    G, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo : int
        As in :func:`_lower_gijc`.
    out : float32 array (N*Ho*Wo, C*kh*kw), written; columns in
        (group, kh, kw, C/group) order.

    Notes
    -----
    Each task (one output image row) first transposes the ``kh`` input rows
    it reads into a local (kh, W, C) buffer (in L1/L2), then copies taps
    from it as :func:`_lower_gijc` does.  Input rows are transposed up to
    ``kh/sh`` times, but there is no separate transposition pass: one
    parallel region per call instead of two, which matters when other
    processes compete for the cores (each region waits for its slowest
    thread).
    """
    N, C, H, W = x.shape
    Cg = C // G
    for t in prange(N * Ho):
        n = t // Ho
        oh = t - n * Ho
        loc = np.empty((kh, W, C), np.float32)
        for i in range(kh):
            ih = oh * sh - pt + i * dh
            if ih >= 0 and ih < H:
                li = loc[i]
                for c in range(C):
                    xr = x[n, c, ih]
                    for w in range(W):
                        li[w, c] = xr[w]
        for ow in range(Wo):
            orow = out[t * Wo + ow]
            for g in range(G):
                c0 = g * Cg
                for i in range(kh):
                    ih = oh * sh - pt + i * dh
                    for j in range(kw):
                        iw = ow * sw - pl + j * dw
                        base = ((g * kh + i) * kw + j) * Cg
                        dst = orow[base:base + Cg]
                        if ih < 0 or ih >= H or iw < 0 or iw >= W:
                            dst[:] = 0.0
                        else:
                            src = loc[i, iw, c0:c0 + Cg]
                            for c in range(Cg):
                                dst[c] = src[c]
    return out


def _swap_last2(x, out, B):
    """``out[n, p, a] = x[n, a, p]``: x (N, A, P), out (N, P, A).

    NCHW -> NHWC is this with ``A = C``, ``P = H*W``.  Parallel over blocks
    of ``B`` columns ``p``; the inner loop reads along ``p`` and the writes
    land in the task's contiguous ``B*A`` block of ``out`` (L1/L2 resident).
    Running the inner loop along ``a`` instead reads lines ``P*4`` bytes
    apart (4 KiB for a 32x32 map), which alias in the cache: 2-3x slower.
    """
    N, A, P = x.shape
    nblk = (P + B - 1) // B
    for t in prange(N * nblk):
        n = t // nblk
        p0 = (t - n * nblk) * B
        p1 = min(P, p0 + B)
        ob = out[n, p0:p1]                     # (p1-p0, A), contiguous block
        for a in range(A):
            xr = x[n, a, p0:p1]
            for p in range(p1 - p0):
                ob[p, a] = xr[p]
    return out


lower_nchw = kernel(_lower_nchw)
lower_nhwc = kernel(_lower_nhwc)
lower_gijc = kernel(_lower_gijc)
lower_nchw_gijc = kernel(_lower_nchw_gijc)
swap_last2 = kernel(_swap_last2)
#: Columns per task of :func:`_swap_last2`.
SWAP_BLOCK = 64


def weight_ijc(weight):
    """The weight as (C_out, kh*kw*Cg) with columns in (kh, kw, Cg) order.

    ``weight_ijc(w)[o, (i*kw + j)*Cg + c] == w[o, c, i, j]``; the matrix the
    (g, kh, kw, c) lowerings multiply with (group ``g`` owns rows
    ``[g*Cog, (g+1)*Cog)``).
    """
    # no copy when kh*kw == 1 or Cg == 1 (the permutation is the identity);
    # otherwise one pass over the weight, memory-bound (a Numba kernel doing
    # per-channel transposes in L1 was no faster)
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(weight.shape[0], -1)


def to_nhwc(x):
    """C-contiguous NHWC copy of an NCHW float32 array (parallel when large)."""
    N, C, H, W = x.shape
    out = np.empty((N, H, W, C), np.float32)
    pick(swap_last2, x.size)(x.reshape(N, C, H * W), out.reshape(N, H * W, C), SWAP_BLOCK)
    return out


def to_nchw(x):
    """C-contiguous NCHW copy of an NHWC float32 array.

    NumPy's strided copy is faster in this direction than the blocked kernel
    (measured: 0.4 vs 1.1 ms for 8x32x32x64, one thread).
    """
    out = np.empty((x.shape[0], x.shape[3], x.shape[1], x.shape[2]), np.float32)
    np.copyto(out, x.transpose(0, 3, 1, 2))
    return out


def lower(x, kh, kw, stride, padding, dilation, out_hw, layout, out):
    """Public-layout im2col rows of ``x`` into ``out`` (no validation).

    Parameters
    ----------
    x : float32 array (N, C, H, W) or (N, H, W, C)
    kh, kw : int
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    out_hw : (Ho, Wo)
    layout : "NCHW" or "NHWC"
    out : float32 array (N*Ho*Wo, C*kh*kw), columns in (C, kh, kw) order
    """
    Ho, Wo = out_hw
    pair = lower_nchw if layout == "NCHW" else lower_nhwc
    fn = pick(pair, out.size)
    fn(x, kh, kw, stride[0], stride[1], padding[0], padding[2],
       dilation[0], dilation[1], Ho, Wo, out)
    return out


def run_chunks(nchunks, work, make_buffers):
    """Run ``work(i, buffers)`` for ``i in range(nchunks)``, in order.

    Each chunk uses the parallel kernels (through ``pick``) and multithreaded
    BLAS.  (Running chunks concurrently on a thread pool, each with a serial
    lowering and single-threaded BLAS, was measured too: 1.2x slower in
    geometric mean over the ResNet-18 layers at batch 32 on 2 threads, as
    every thread packs its own copy of the weight and they compete for cache.)
    """
    bufs = make_buffers()
    for i in range(nchunks):
        work(i, bufs)


def images_per_chunk(N, bytes_per_image, rows_per_image=None):
    """Images per chunk: about CHUNK_BYTES each (at least ``MIN_CHUNK_ROWS``
    rows when ``rows_per_image`` is given), spread evenly over the chunks."""
    nb = max(1, CHUNK_BYTES // max(1, bytes_per_image))
    if rows_per_image:
        nb = max(nb, -(-MIN_CHUNK_ROWS // rows_per_image))
    if N <= nb:
        return max(1, N)
    nchunks = -(-N // nb)
    return -(-N // nchunks)


def conv2d_im2col(x, weight, bias, stride, padding, dilation, groups, layout, out_hw):
    """Convolution by im2col lowering and BLAS matrix products (no validation).

    Parameters
    ----------
    x : float32 C-contiguous array (N, C, H, W) or (N, H, W, C) per ``layout``
    weight : float32 C-contiguous array (C_out, C/groups, kh, kw)
    bias : float32 array (C_out,) or None
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    groups : int
    layout : "NCHW" or "NHWC" (of x and of the result)
    out_hw : (Ho, Wo)

    Returns
    -------
    float32 array (N, C_out, Ho, Wo) or (N, Ho, Wo, C_out)

    Notes
    -----
    The lowering here uses column order (group, kh, kw, C/group)
    (:func:`_lower_gijc`, :func:`_lower_nchw_gijc`) with the weight permuted
    to match: the same matrix as the public (C, kh, kw) rows up to a
    permutation of columns, but several times faster to build.  When the
    batch has fewer output positions than ``GIJC_MIN_ROWS_PER_OUTPUT *
    C_out`` (late layers at batch 1) the permuted weight copy would cost more
    than it saves, and the (C, kh, kw) lowering is used with the weight as
    it is.  The batch goes a few images at a time (``CHUNK_BYTES``); each
    chunk is one parallel lowering call and one stacked ``np.matmul`` over
    the groups (group ``g`` owns columns ``[g*Kg, (g+1)*Kg)``, ``Kg =
    C/G*kh*kw``)::

        for g in range(G):
            y[:, g*Cog:(g+1)*Cog] = rows[:, g*Kg:(g+1)*Kg] @ wmat[g].T

    The product is computed as (rows, C_out), i.e. NHWC; for NCHW each
    chunk's result is transposed into ``out`` while still in cache.
    Unpadded 1x1 convolutions skip the lowering: x (or its subsampled copy
    for stride > 1) is its own rows; in NCHW ``out[n] = wmat @ x[n]``.
    """
    N = x.shape[0]
    C_out, Cg, kh, kw = weight.shape
    C = Cg * groups
    Ho, Wo = out_hw
    P = Ho * Wo
    G = groups
    Cog = C_out // G
    Kg = Cg * kh * kw
    K = C * kh * kw
    if layout == "NCHW":
        out = np.empty((N, C_out, Ho, Wo), np.float32)
    else:
        out = np.empty((N, Ho, Wo, C_out), np.float32)
    if N == 0:
        return out
    pointwise = kh == 1 and kw == 1 and tuple(padding) == (0, 0, 0, 0)
    if pointwise and tuple(stride) != (1, 1):
        # a strided 1x1 convolution is a 1x1 convolution of the subsampled input
        if layout == "NCHW":
            x = np.ascontiguousarray(x[:, :, :Ho * stride[0]:stride[0], :Wo * stride[1]:stride[1]])
        else:
            x = np.ascontiguousarray(x[:, :Ho * stride[0]:stride[0], :Wo * stride[1]:stride[1]])
    if pointwise and layout == "NCHW":
        # out[n, g] (Cog, P) = w[g] (Cog, Cg) @ x[n, g] (Cg, P)
        np.matmul(weight.reshape(G, Cog, Kg), x.reshape(N, G, Kg, P),
                  out=out.reshape(N, G, Cog, P))
    elif pointwise:
        # y[g] (N*P, Cog) = x[:, g] (N*P, Cg) @ w[g].T
        np.matmul(x.reshape(N * P, G, Kg).transpose(1, 0, 2),
                  weight.reshape(G, Cog, Kg).transpose(0, 2, 1),
                  out=out.reshape(N * P, G, Cog).transpose(1, 0, 2))
    else:
        nb = images_per_chunk(N, P * K * 4, P)
        # The fast (g, kh, kw, c) lowering needs the weight permuted to match,
        # a strided copy of C_out*K floats per call: worth it only when there
        # are more rows than weights to copy (measured: the permuted copy
        # costs ~0.6 ns/float, the fast lowering ~0.1 and the (C, kh, kw)
        # one ~0.5 ns per lowered float).  Late layers at small batch lower
        # in (C, kh, kw) order against the weight as it is.
        fast = N * P >= GIJC_MIN_ROWS_PER_OUTPUT * C_out
        nchw = layout == "NCHW"
        if fast:
            # wmat[g, o, (i*kw + j)*Cg + c] = weight[g*Cog + o, c, i, j]
            wmat = weight_ijc(weight).reshape(G, Cog, Kg)
            k = lower_nchw_gijc if nchw else lower_gijc
            extra = (G,)
        else:
            wmat = weight.reshape(G, Cog, Kg)
            k = lower_nchw if nchw else lower_nhwc
            extra = ()
        wT = wmat.transpose(0, 2, 1)                                   # (G, Kg, Cog)
        # GEMM orientation (measured, 2 threads, docs/bench_conv.md):
        # * "image": NCHW with a short contraction (Kg <= SMALL_K, e.g. a stem
        #   on 1-3 channels): per image out[n, g] = wmat[g] @ rows_n[:, g].T
        #   straight into out; the product is cheap and a transpose of the
        #   result would cost more than it;
        # * "left": few rows for the weight (rows <= 2*C_out, late layers):
        #   yT = wmat @ rows.T, (C_out, rows), then transposed into out;
        # * "right": rows @ wmat.T, (rows, C_out), i.e. NHWC (for NCHW
        #   transposed into out while still in cache).
        if nchw and Kg <= SMALL_K:
            mode = "image"
        elif nb * P <= 2 * C_out:
            mode = "left"
        else:
            mode = "right"
        low_pair = k

        def make_buffers():
            rows = np.empty((nb * P, K), np.float32)
            if mode == "left":
                return rows, np.empty((C_out, nb * P), np.float32)
            if mode == "right" and nchw:
                return rows, np.empty((nb * P, C_out), np.float32)
            return rows, None

        def work(i, bufs):
            n0 = i * nb
            n1 = min(N, n0 + nb)
            m = n1 - n0
            R = m * P
            rows = bufs[0][:R]
            lowk = pick(low_pair, rows.size)
            lowk(x[n0:n1], *extra, kh, kw, stride[0], stride[1], padding[0], padding[2],
                 dilation[0], dilation[1], Ho, Wo, rows)
            if mode == "image":
                # for n, g: out[n, g*Cog:(g+1)*Cog] (Cog, P) = wmat[g] @ rows_n[:, g-cols].T
                np.matmul(wmat, rows.reshape(m, P, G, Kg).transpose(0, 2, 3, 1),
                          out=out[n0:n1].reshape(m, G, Cog, P))
            elif mode == "left":
                # for g: yT[g*Cog:(g+1)*Cog] (Cog, R) = wmat[g] @ rows[:, g-cols].T
                yT = bufs[1][:, :R]
                np.matmul(wmat, rows.reshape(R, G, Kg).transpose(1, 2, 0),
                          out=yT.reshape(G, Cog, R))
                if nchw:
                    np.copyto(out[n0:n1].reshape(m, C_out, P),
                              yT.reshape(C_out, m, P).transpose(1, 0, 2))
                else:
                    np.copyto(out.reshape(N * P, C_out)[n0 * P:n1 * P], yT.T)
            else:
                # for g: y[:, g*Cog:(g+1)*Cog] (R, Cog) = rows[:, g-cols] @ wmat[g].T
                y = bufs[1][:R] if nchw else out.reshape(N * P, C_out)[n0 * P:n1 * P]
                np.matmul(rows.reshape(R, G, Kg).transpose(1, 0, 2), wT,
                          out=y.reshape(R, G, Cog).transpose(1, 0, 2))
                if nchw:
                    np.copyto(out[n0:n1].reshape(m, C_out, P),
                              y.reshape(m, P, C_out).transpose(0, 2, 1))

        run_chunks(-(-N // nb), work, make_buffers)
    if bias is not None:
        if layout == "NCHW":
            out += bias.reshape(1, C_out, 1, 1)
        else:
            out += bias
    return out
