"""LCNN lookup-accumulate kernel: the sparse, shifted stage of a lookup-based convolution.

After the dictionary stage (a 1x1 convolution of the input with the ``k``
atoms, done by BLAS in :mod:`tabconv_np.lcnn`), every output value is a short
sum of looked-up dictionary maps::

    out[n, ho, wo, o] = bias[o] + sum over i < kh, j < kw, t < s of
                        coef[o, i, j, t] * P[n, ho*sh + i*dh, wo*sw + j*dw, idx[o, i, j, t]]

where ``P`` (N, Hp, Wp, k) holds the dictionary maps of the zero-padded input
(a map of zero padding is zero: the dictionary stage has no bias).

No validation here (see :class:`tabconv_np.lcnn.LCNNConv2d`).  Parallel over
output rows ``(n, ho)``; each output element is summed by one thread in the
fixed order ``(i, j, t)``, then the bias added, so the serial and parallel
entries agree bitwise.  The readable version is
:func:`tabconv_np.reference.lcnn_conv_naive`.
"""
import numpy as np
from numba import prange

from ._jit import kernel


def _lookup_accumulate(P, idx, coef, bias, sh, sw, dh, dw, out):
    """``out[n, ho, wo, o]`` as in the module docstring.

    P : float32 (N, Hp, Wp, k), the padded dictionary maps; idx : int32
    (C_out, kh, kw, s) atom indices < k; coef : float32 (C_out, kh, kw, s);
    bias : float32 (C_out,); sh, sw, dh, dw : stride and dilation;
    out : float32 (N, Ho, Wo, C_out).
    """
    N, Ho, Wo, C_out = out.shape
    kh, kw, s = idx.shape[1], idx.shape[2], idx.shape[3]
    for r in prange(N * Ho):
        n = r // Ho
        ho = r - n * Ho
        for wo in range(Wo):
            for o in range(C_out):
                acc = np.float32(0.0)
                for i in range(kh):
                    row = P[n, ho * sh + i * dh]
                    for j in range(kw):
                        px = row[wo * sw + j * dw]
                        for t in range(s):
                            acc += coef[o, i, j, t] * px[idx[o, i, j, t]]
                out[n, ho, wo, o] = acc + bias[o]


lookup_accumulate = kernel(_lookup_accumulate)
