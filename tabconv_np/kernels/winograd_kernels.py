"""Winograd tile transforms: ``V = B^T d B`` of every input tile and ``Y = A^T M A`` of every output tile.

The elementwise stage between them is a batched BLAS product (see
:mod:`tabconv_np.conv.winograd`).  Both kernels work on NHWC data, one tile
per task, and vectorise over channels: every transform entry multiplies a
contiguous channel vector, and zero entries are skipped.  No validation here;
each output element is computed by one thread in a fixed order, so serial and
parallel entries agree bitwise.  Reference: the naive convolution
``reference.conv2d_naive`` (pairs ``conv2d[winograd]``, ``conv2d[winograd4]``).
"""
import numba
import numpy as np
from numba import prange

from ._jit import CACHE, kernel


def _axpy_py(dst, b, src):
    """``dst += b * src`` over a channel vector."""
    for c in range(dst.shape[0]):
        dst[c] += b * src[c]


_axpy = numba.njit(inline="always", cache=CACHE)(_axpy_py)


def _input_transform(xp, BT, m, th, tw, V):
    """``V[i*a + j, t, :] = sum_kl BT[i, k] * d_t[k, l, :] * BT[j, l]``.

    xp : float32 (N, Hp, Wp, C), the zero-padded input (Hp >= th*m + 2, Wp >= tw*m + 2)
    BT : float32 (a, a), a = m + 2
    m, th, tw : int; tile t = (n*th + p)*tw + q starts at row p*m, column q*m
    V : float32 (a*a, N*th*tw, C), written
    """
    a = BT.shape[0]
    C = xp.shape[3]
    for t in prange(V.shape[1]):
        n = t // (th * tw)
        p = (t // tw) % th
        q = t % tw
        tmp = np.zeros((a, a, C), np.float32)       # tmp[i, l] = sum_k BT[i, k] d[k, l]
        for i in range(a):
            for k in range(a):
                b = BT[i, k]
                if b != 0:
                    for l in range(a):
                        _axpy(tmp[i, l], b, xp[n, p * m + k, q * m + l])
        for i in range(a):
            for j in range(a):
                dst = V[i * a + j, t]
                dst[:] = 0
                for l in range(a):
                    if BT[j, l] != 0:
                        _axpy(dst, BT[j, l], tmp[i, l])


def _output_transform(M, AT, th, tw, Ho, Wo, bias, out):
    """``out[n, p*m + r, q*m + s, :] = sum_ij AT[r, i] * M[i*a + j, t, :] * AT[s, j] + bias``.

    M : float32 (a*a, N*th*tw, C_out); AT : float32 (m, a); bias : float32 (C_out,)
    out : float32 (N, Ho, Wo, C_out), written; tile rows/columns beyond Ho, Wo dropped
    """
    m, a = AT.shape
    Co = M.shape[2]
    for t in prange(M.shape[1]):
        n = t // (th * tw)
        p = (t // tw) % th
        q = t % tw
        tmp = np.zeros((m, a, Co), np.float32)      # tmp[r, j] = sum_i AT[r, i] M[i, j]
        for r in range(m):
            for i in range(a):
                b = AT[r, i]
                if b != 0:
                    for j in range(a):
                        _axpy(tmp[r, j], b, M[i * a + j, t])
        for r in range(m):
            h = p * m + r
            if h >= Ho:
                break
            for s in range(m):
                w = q * m + s
                if w >= Wo:
                    break
                dst = out[n, h, w]
                dst[:] = bias
                for j in range(a):
                    if AT[s, j] != 0:
                        _axpy(dst, AT[s, j], tmp[r, j])


input_transform = kernel(_input_transform)
output_transform = kernel(_output_transform)
