"""Layout kernel: NCHW -> NHWC transposition (driver: :mod:`tabconv_np.conv.layout`)."""
from numba import prange

from ._jit import kernel


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


swap_last2 = kernel(_swap_last2)
