"""MEC lowering kernel: one row per output column, the whole padded height.

The matrix it writes, ``L[n*Wo + w, (h*kw + j)*C + c] = xpad[n, h, w*sw + j*dw, c]``
per group, and the GEMMs over its column windows are described in the driver,
:mod:`tabconv_np.conv.mec`.  No validation; copies run through views indexed
from 0, so they vectorise.
"""
from numba import prange

from ._jit import kernel


def _lower_mec(x, G, kw, sw, pt, pl, dw, Hu, Wo, out):
    """MEC lowering of an NHWC batch, one matrix per group.

    Parameters
    ----------
    x : float32 array (N, H, W, C)
    G : int
        Groups; group ``g`` holds channels ``[g*Cg, (g+1)*Cg)``.
    kw, sw, pt, pl, dw : int
        Kernel width, horizontal stride, top/left padding, horizontal dilation.
    Hu, Wo : int
        Padded rows used and output width.
    out : float32 array (G, N*Wo, Hu*kw*Cg), written::

        out[g, n*Wo + w, (h*kw + j)*Cg + c] = xpad[n, h, w*sw + j*dw, g*Cg + c]

    Notes
    -----
    Parallel over the rows ``n*Wo + w`` (all groups in one region); copies
    run along ``c`` through views indexed from 0, so they vectorise.
    """
    N, H, W, C = x.shape
    Cg = C // G
    for t in prange(N * Wo):
        n = t // Wo
        w = t - n * Wo
        for g in range(G):
            orow = out[g, t]
            c0 = g * Cg
            for h in range(Hu):
                ih = h - pt
                for j in range(kw):
                    iw = w * sw + j * dw - pl
                    base = (h * kw + j) * Cg
                    dst = orow[base:base + Cg]
                    if ih < 0 or ih >= H or iw < 0 or iw >= W:
                        dst[:] = 0.0
                    else:
                        src = x[n, ih, iw, c0:c0 + Cg]
                        for c in range(Cg):
                            dst[c] = src[c]
    return out


lower_mec = kernel(_lower_mec)
