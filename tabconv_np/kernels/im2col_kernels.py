"""im2col lowering kernels: im2col rows of a batch, in two column orders.

The public lowering turns every output position into one row of a matrix::

    rows[(n*Ho + oh)*Wo + ow, (c*kh + i)*kw + j]
        = x[n, c, oh*sh - pt + i*dh, ow*sw - pl + j*dw]      (0 outside x)

so ``rows`` has shape ``(N*Ho*Wo, C*kh*kw)`` and column order ``(C, kh, kw)``,
the same as ``weight.reshape(C_out, -1)``: :data:`lower_nchw` and
:data:`lower_nhwc` build it from either layout.  :data:`lower_gijc` and
:data:`lower_nchw_gijc` build the same matrix with its columns permuted to
(group, kh, kw, C/group) order, the convolution's own lowering (every kernel
tap is one contiguous copy of the channels).  The driver that multiplies the
rows with the weight is :mod:`tabconv_np.conv.im2col`.

Kernels here do no validation: the caller passes float32 arrays of the right
shapes, non-negative paddings and a preallocated ``out``.  Inner copy loops
run over views indexed from 0, so that Numba can prove the index
non-negative, drop its negative-index wraparound test and vectorise
(docs/background.md, section 4 lists the other Numba rules followed here).
"""
import numba
import numpy as np
from numba import prange

from ._jit import CACHE, kernel


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


lower_nchw = kernel(_lower_nchw)
lower_nhwc = kernel(_lower_nhwc)
lower_gijc = kernel(_lower_gijc)
lower_nchw_gijc = kernel(_lower_nchw_gijc)
