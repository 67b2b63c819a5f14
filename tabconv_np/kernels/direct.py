"""Direct convolution: reordered loops, no lowering buffer.

The textbook loop nest is ``for n, o, p, q: for c, i, j: y += w * x``: the
innermost loops jump between channels and rows.  Here the loops are reordered
so that the innermost loop runs along an output row (contiguous in NCHW) and
the weight is a scalar held in a register::

    for n, o:                         # prange: one output plane per task
        y[n, o] = bias[o]
        for c in group(o), i < kh, j < kw:
            w_ = weight[o, c, i, j]
            for p (valid rows):
                for q (valid columns):   # vectorised when sw == 1
                    y[n, o, p, q] += w_ * x[n, c, p*sh - pt + i*dh, q*sw - pl + j*dw]

The plane ``y[n, o]`` stays in L1 while all ``Cg*kh*kw`` terms are added, and
the padded border is handled by the loop bounds, not by a padded copy.  No
extra memory; each task does ``Cg*kh*kw*Ho*Wo`` multiply-adds, which makes it
the method of choice for depthwise and small-group convolutions, where GEMMs
would be tiny.  Each element's sum runs in the same order whatever the thread
count, so the parallel and serial kernels agree bitwise.
"""
import numpy as np
from numba import prange

from ._jit import kernel, pick
from .im2col import _valid_range, to_nchw, to_nhwc


def _direct_nchw(x, weight, bias, sh, sw, pt, pl, dh, dw, groups, out):
    """Direct NCHW convolution into ``out``.

    Parameters
    ----------
    x : float32 array (N, C, H, W)
    weight : float32 array (C_out, C/groups, kh, kw)
    bias : float32 array (C_out,) (zeros for no bias)
    sh, sw, pt, pl, dh, dw : int
        Stride, top/left padding, dilation.
    groups : int
    out : float32 array (N, C_out, Ho, Wo), written
    """
    N, C, H, W = x.shape
    C_out, Cg, kh, kw = weight.shape
    Ho = out.shape[2]
    Wo = out.shape[3]
    Cog = C_out // groups
    for t in prange(N * C_out):
        n = t // C_out
        o = t - n * C_out
        c0 = (o // Cog) * Cg
        y = out[n, o]
        y[:, :] = bias[o]
        for c in range(Cg):
            xc = x[n, c0 + c]
            for i in range(kh):
                plo, phi = _valid_range(i * dh - pt, sh, H, Ho)
                for j in range(kw):
                    off = j * dw - pl
                    qlo, qhi = _valid_range(off, sw, W, Wo)
                    wv = weight[o, c, i, j]
                    for p in range(plo, phi):
                        xr = xc[p * sh - pt + i * dh]
                        yr = y[p]
                        for q in range(qlo, qhi):
                            yr[q] += wv * xr[q * sw + off]
    return out


direct_nchw = kernel(_direct_nchw)


def conv2d_direct(x, weight, bias, stride, padding, dilation, groups, layout, out_hw):
    """Direct convolution (no validation).

    Parameters
    ----------
    x : float32 array (N, C, H, W) or (N, H, W, C) per ``layout``
    weight : float32 array (C_out, C/groups, kh, kw)
    bias : float32 array (C_out,) or None
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    groups : int
    layout : "NCHW" or "NHWC" (of x and of the result; NHWC is converted to
        NCHW and back, the kernel runs along W rows)
    out_hw : (Ho, Wo)

    Returns
    -------
    float32 array (N, C_out, Ho, Wo) or (N, Ho, Wo, C_out)
    """
    N = x.shape[0]
    C_out, Cg, kh, kw = weight.shape
    Ho, Wo = out_hw
    if layout == "NHWC":
        x = to_nchw(x)
    if bias is None:
        bias = np.zeros(C_out, np.float32)
    out = np.empty((N, C_out, Ho, Wo), np.float32)
    work = N * C_out * Ho * Wo * Cg * kh * kw
    pick(direct_nchw, work)(x, weight, bias, stride[0], stride[1], padding[0], padding[2],
                            dilation[0], dilation[1], groups, out)
    if layout == "NHWC":
        out = to_nhwc(out)
    return out
