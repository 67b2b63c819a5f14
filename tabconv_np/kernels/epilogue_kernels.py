"""The epilogue of a prepared convolution: bias, residual add and clamp in one pass.

A convolution's matrix product leaves ``y`` (rows, C_out); what follows it in
a network (the bias, the residual sum of a ResNet block, ReLU/ReLU6/Clip) is
applied here to each element once, while the row is in cache, instead of as
three passes over memory::

    y[r, m] = clamp(y[r, m] + bias[m] + res[r, m], lo, hi)

The clamp is written as two comparisons (``if v < lo``, ``if v > hi``) so a
NaN stays NaN, as in the exact layers.  No validation here (see
:mod:`tabconv_np.plan`); each element is computed by one thread, so serial and
parallel entries agree bitwise.  Reference: ``reference.conv_epilogue_naive``.
"""
import numba
import numpy as np
from numba import prange

from ._jit import CACHE, kernel


def _finish_py(v, r, lo, hi):
    """``clamp(v + r, lo, hi)`` by two comparisons, so that a NaN stays NaN."""
    v += r
    if v < lo:
        v = lo
    if v > hi:
        v = hi
    return v


#: The epilogue of one element, inlined into every kernel that ends with it.
finish = numba.njit(inline="always", cache=CACHE)(_finish_py)


def _bias_residual_clamp(y, bias, res, has_res, lo, hi):
    """In place: ``y = clamp(y + bias + res, lo, hi)`` row by row.

    Parameters
    ----------
    y : float32 array (R, M), C-contiguous rows
    bias : float32 array (M,)
    res : float32 array (R, M); read only when ``has_res``
    has_res : bool
    lo, hi : float32
        Clamp bounds; ``-inf`` / ``inf`` for none.
    """
    R, M = y.shape
    for r in prange(R):
        yr = y[r]
        for m in range(M):
            yr[m] = finish(yr[m] + bias[m], res[r, m] if has_res else np.float32(0), lo, hi)
    return y


bias_residual_clamp = kernel(_bias_residual_clamp)
