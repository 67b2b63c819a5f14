"""Numba kernels of the binary and ternary layers: packing signs into bits, XNOR + popcount products.

Bit layout (the same for lowered input rows and weight rows): value ``d`` of a
row of ``D`` is bit ``d % 64`` of word ``d // 64`` (uint64, least significant
bit first); the bits past ``D`` in the last word are 0.  A set bit is +1, a
clear bit -1: ``sign(v) = +1 if v > 0 else -1`` (zero, padding included, is -1).

The products are integer and exact:

* binary weights (sign bits ``S``): ``dot = D - 2 * popcount(A ^ S)``, one XOR
  and one popcount per word (the padding bits agree and add nothing);
* ternary weights (sign bits ``S`` and mask bits ``T``, weight ``0`` where the
  mask bit is clear): ``dot = nnz - 2 * popcount((A ^ S) & T)`` with
  ``nnz = popcount(T)``, one XOR, one AND and one popcount per word.

Popcount is LLVM's ``ctpop`` intrinsic (one ``popcnt`` instruction on x86-64
with SSE4.2, ``cnt`` + ``addv`` on AArch64).  Parallel over rows; every output
is one thread's integer sum, so the serial and parallel entries agree bitwise.
The readable version is :func:`tabconv_np.reference.xnor_conv_naive` (the float
convolution of the +-1 tensors).  No validation here (see :mod:`tabconv_np.binary`).
"""
import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from ._jit import CACHE, kernel

#: Bits per packed word.
WORD = 64
#: Rows per task.
CHUNK = 16


@intrinsic
def _ctpop(typingctx, x):
    """``popcount(x)`` of a uint64, as LLVM's ``llvm.ctpop.i64``."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [args[0].type])
        return builder.call(fn, args)
    return sig, codegen


@numba.njit(inline="always", cache=CACHE)
def popcount(x):
    """Set bits of the uint64 ``x``."""
    return _ctpop(x)


def _pack_signs(X, out):
    """``out[r]`` = the sign bits of ``X[r]`` (see the module docstring).

    X : float32 (R, D); out : uint64 (R, ceil(D / 64)), every bit written.
    """
    R, D = X.shape
    nw = out.shape[1]
    for t in prange((R + CHUNK - 1) // CHUNK):
        for r in range(t * CHUNK, min(R, (t + 1) * CHUNK)):
            x = X[r]
            for w in range(nw):
                word = np.uint64(0)
                d0 = w * WORD
                for b in range(min(WORD, D - d0)):
                    if x[d0 + b] > 0:
                        word |= np.uint64(1) << np.uint64(b)
                out[r, w] = word


def _xnor_gemm(A, S, T, nnz, masked, out):
    """Integer products of packed +-1 rows with packed binary or ternary weights.

    A : uint64 (R, nw), the packed rows; S : uint64 (M, nw), the weight signs;
    T : uint64 (M, nw), the mask of nonzero weights (read only when
    ``masked``); nnz : int32 (M,), the nonzero weights per row (``D`` for
    binary weights, ``popcount(T[m])`` for ternary); out : int32 (R, M)::

        out[r, m] = nnz[m] - 2 * sum_w popcount((A[r, w] ^ S[m, w]) [& T[m, w]])
    """
    R, nw = A.shape
    M = S.shape[0]
    for t in prange((R + CHUNK - 1) // CHUNK):
        for r in range(t * CHUNK, min(R, (t + 1) * CHUNK)):
            a = A[r]
            for m in range(M):
                s, k = S[m], T[m]
                acc = np.uint64(0)
                for w in range(nw):
                    x = a[w] ^ s[w]
                    if masked:
                        x &= k[w]
                    acc += popcount(x)
                out[r, m] = np.int32(nnz[m] - 2 * np.int64(acc))


pack_signs = kernel(_pack_signs)
xnor_gemm = kernel(_xnor_gemm)
