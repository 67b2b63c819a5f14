"""Direct convolution kernel: the reordered loop nest, one output plane per task.

It reads a zero-padded, phase-split ("space to depth") input, so that every
tap is one contiguous multiply-add run over the output plane; the method and
the input transformation are described in the driver,
:mod:`tabconv_np.conv.direct`.  Each element's sum runs in the same order
(bias, then taps in ``(c, i, j)`` order) whatever the thread count, so the
parallel and serial entries agree bitwise.  No validation.
"""
import numpy as np
from numba import prange

from ._jit import kernel


def _direct_phases(xs, weight, bias, dh, dw, groups, Ho, Wo, out):
    """Direct convolution on a phase-split padded input.

    Parameters
    ----------
    xs : float32 C-contiguous array (N, C, sh, sw, Hq, Wq)
        ``xs[n, c, rh, rw, a, b] = xpad[n, c, a*sh + rh, b*sw + rw]`` (zero
        beyond the padded input).
    weight : float32 array (C_out, C/groups, kh, kw)
    bias : float32 array (C_out,) (zeros for no bias)
    dh, dw : int
        Dilation.
    groups, Ho, Wo : int
    out : float32 array (N, C_out, Ho, Wo), written
    """
    N, C, sh, sw, Hq, Wq = xs.shape
    C_out, Cg, kh, kw = weight.shape
    Cog = C_out // groups
    L = (Ho - 1) * Wq + Wo
    plane = Hq * Wq
    xflat = xs.reshape(N, C, sh * sw * plane)
    for t in prange(N * C_out):
        n = t // C_out
        o = t - n * C_out
        c0 = (o // Cog) * Cg
        acc = np.empty(L, np.float32)
        acc[:] = bias[o]
        for c in range(Cg):
            xc = xflat[n, c0 + c]
            wc = weight[o, c]
            for i in range(kh):
                rh = (i * dh) % sh
                ai = (i * dh) // sh
                for j in range(kw):
                    # phase (rh, rw), then row ai and column bj inside it
                    b0 = (rh * sw + (j * dw) % sw) * plane + ai * Wq + (j * dw) // sw
                    wv = wc[i, j]
                    xf = xc[b0:b0 + L]
                    for q in range(L):             # contiguous, vectorised
                        acc[q] += wv * xf[q]
        for p in range(Ho):
            out[n, o, p, :] = acc[p * Wq:p * Wq + Wo]
    return out


direct_phases = kernel(_direct_phases)
