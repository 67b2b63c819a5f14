"""im2col lowering + BLAS GEMM convolution.

The lowering turns every output position into one row of a matrix::

    rows[(n*Ho + oh)*Wo + ow, (c*kh + i)*kw + j]
        = x[n, c, oh*sh - pt + i*dh, ow*sw - pl + j*dw]      (0 outside x)

so ``rows`` has shape ``(N*Ho*Wo, C*kh*kw)`` and column order ``(C, kh, kw)``,
the same as ``weight.reshape(C_out, -1)``.  The convolution is then one matrix
product per group: ``rows[:, group columns] @ weight_g.reshape(C_out_g, -1).T``.
This exact row layout is also what the table-lookup (TabConv/PQ) layers
encode, so ``lower_nchw`` / ``lower_nhwc`` are shared with them through
:func:`tabconv_np.functional.im2col_rows`.

Kernels here do no validation: the caller passes float32 arrays of the right
shapes, non-negative paddings and a preallocated ``out``.
"""
import numba
import numpy as np
from numba import prange

from ._jit import CACHE, kernel, pick

#: Lowering buffer size per chunk (bytes).  The batch is lowered and multiplied
#: a few images at a time so that the lowered rows are still in cache (L2/L3)
#: when the GEMM reads them, instead of a full ``N*Ho*Wo x C*kh*kw`` matrix
#: going through main memory.
CHUNK_BYTES = 4 << 20
#: A chunk holds at least this many rows when the batch allows it: small GEMMs
#: (a few output positions per image in late ResNet stages) waste BLAS's
#: packing of the weight matrix.
MIN_CHUNK_ROWS = 256


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
    """Lower an NCHW batch to im2col rows.

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
    ``out``.  Writes go row by row (contiguous in ``out``).
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
    """Lower an NHWC batch to im2col rows (same rows as :func:`_lower_nchw`).

    Parameters
    ----------
    x : float32 array (N, H, W, C)
    kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo : int
        As in :func:`_lower_nchw`.
    out : float32 array (N*Ho*Wo, C*kh*kw), written; columns in (C, kh, kw) order

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
            r = r0 + ow
            for i in range(kh):
                ih = oh * sh - pt + i * dh
                for j in range(kw):
                    iw = ow * sw - pl + j * dw
                    col = i * kw + j
                    if ih < 0 or ih >= H or iw < 0 or iw >= W:
                        for c in range(C):
                            out[r, c * khw + col] = 0.0
                    else:
                        for c in range(C):
                            out[r, c * khw + col] = x[n, ih, iw, c]
    return out


lower_nchw = kernel(_lower_nchw)
lower_nhwc = kernel(_lower_nhwc)


def lower(x, kh, kw, stride, padding, dilation, out_hw, layout, out):
    """Run the lowering kernel for ``layout`` into ``out`` (no validation).

    Parameters
    ----------
    x : float32 array (N, C, H, W) or (N, H, W, C)
    kh, kw : int
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    out_hw : (Ho, Wo)
    layout : "NCHW" or "NHWC"
    out : float32 array (N*Ho*Wo, C*kh*kw)
    """
    Ho, Wo = out_hw
    pair = lower_nchw if layout == "NCHW" else lower_nhwc
    fn = pick(pair, out.size)
    fn(x, kh, kw, stride[0], stride[1], padding[0], padding[2],
       dilation[0], dilation[1], Ho, Wo, out)
    return out


def _images_per_chunk(N, P, K):
    """Images lowered at once: about CHUNK_BYTES, at least MIN_CHUNK_ROWS rows."""
    nb = max(1, CHUNK_BYTES // max(1, P * K * 4))
    nb = max(nb, -(-MIN_CHUNK_ROWS // P))
    return min(N, nb)


def conv2d_im2col(x, weight, bias, stride, padding, dilation, groups, layout, out_hw):
    """Convolution by im2col lowering and a BLAS matrix product per group.

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
    With groups ``G``, group ``g`` uses the row columns
    ``[g*Kg, (g+1)*Kg)`` (``Kg = C/G*kh*kw``, contiguous because columns are in
    (C, kh, kw) order) and weight rows ``[g*Cg_out, (g+1)*Cg_out)``; all groups
    go to one stacked ``np.matmul`` call::

        for g in range(G):
            y[:, g*Cog:(g+1)*Cog] = rows[:, g*Kg:(g+1)*Kg] @ wmat[g*Cog:(g+1)*Cog].T
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
    # (G, Kg, Cog): the weights of group g as the right operand of rows @ w
    wT = weight.reshape(G, Cog, Kg).transpose(0, 2, 1)
    if layout == "NCHW":
        out = np.empty((N, C_out, Ho, Wo), np.float32)
    else:
        out = np.empty((N, Ho, Wo, C_out), np.float32)
    if N == 0:
        return out
    pointwise = (kh == 1 and kw == 1 and stride == (1, 1) and padding == (0, 0, 0, 0))

    if layout == "NHWC":
        y = out.reshape(N * P, G, Cog).transpose(1, 0, 2)           # (G, rows, Cog)
        if pointwise:                                                 # rows are x itself
            np.matmul(x.reshape(N * P, G, Kg).transpose(1, 0, 2), wT, out=y)
        else:
            nb = _images_per_chunk(N, P, K)
            buf = np.empty((nb * P, K), np.float32)
            for n0 in range(0, N, nb):
                n1 = min(N, n0 + nb)
                rows = buf[: (n1 - n0) * P]
                lower(x[n0:n1], kh, kw, stride, padding, dilation, out_hw, layout, rows)
                np.matmul(rows.reshape(-1, G, Kg).transpose(1, 0, 2), wT,
                          out=y[:, n0 * P:n1 * P])
    else:
        wg = weight.reshape(G, Cog, Kg)
        o3 = out.reshape(N, G, Cog, P)
        if pointwise:                                                 # out[n] = W @ x[n]
            np.matmul(wg, x.reshape(N, G, Kg, P), out=o3)
        else:
            nb = _images_per_chunk(N, P, K)
            buf = np.empty((nb * P, K), np.float32)
            tmp = None
            for n0 in range(0, N, nb):
                n1 = min(N, n0 + nb)
                m = n1 - n0
                rows = buf[: m * P]
                lower(x[n0:n1], kh, kw, stride, padding, dilation, out_hw, layout, rows)
                if m == 1:
                    # out[n, g] (Cog, P) = wg[g] (Cog, Kg) @ rows[:, g-cols].T (Kg, P)
                    np.matmul(wg, rows.reshape(P, G, Kg).transpose(1, 2, 0), out=o3[n0])
                else:
                    # several small images: one GEMM over all their rows, then
                    # (m, P, C_out) -> (m, C_out, P)
                    if tmp is None:
                        tmp = np.empty((nb * P, C_out), np.float32)
                    t = tmp[: m * P]
                    np.matmul(rows.reshape(-1, G, Kg).transpose(1, 0, 2), wT,
                              out=t.reshape(-1, G, Cog).transpose(1, 0, 2))
                    o3[n0:n1] = t.reshape(m, P, G, Cog).transpose(0, 2, 3, 1)
    if bias is not None:
        if layout == "NCHW":
            out += bias.reshape(1, C_out, 1, 1)
        else:
            out += bias
    return out
