"""Array layout helpers of the convolution drivers: NCHW <-> NHWC copies and
the (kh, kw, C) weight matrix (kernel: :mod:`tabconv_np.kernels.layout_kernels`)."""
import numpy as np

from ..kernels.layout_kernels import swap_last2

#: Columns per task of :func:`tabconv_np.kernels.layout_kernels._swap_last2`.
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
    swap_last2.pick(x.size)(x.reshape(N, C, H * W), out.reshape(N, H * W, C), SWAP_BLOCK)
    return out


def to_nchw(x):
    """C-contiguous NCHW copy of an NHWC float32 array.

    NumPy's strided copy is faster in this direction than the blocked kernel
    (measured: 0.4 vs 1.1 ms for 8x32x32x64, one thread).
    """
    out = np.empty((x.shape[0], x.shape[3], x.shape[1], x.shape[2]), np.float32)
    np.copyto(out, x.transpose(0, 3, 1, 2))
    return out
