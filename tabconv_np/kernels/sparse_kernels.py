"""Sparse (CSR) weight times lowered rows: the product of a pruned convolution.

``out[r, o] = sum_{p in [indptr[o], indptr[o+1])} data[p] * rows[r, indices[p]] + bias[o]``:
only the stored (nonzero) weights are multiplied.  The kernel works on the
transposed rows (``cols = rows.T``, one contiguous vector per lowered
column): each stored weight adds ``data[p] * cols[indices[p]]`` to output
channel ``o``'s vector over all positions, a loop LLVM vectorises.  Parallel
over output channels; each output element is summed by one thread in CSR
order, so serial and parallel entries agree bitwise.  The readable version is
:func:`tabconv_np.reference.sparse_conv_naive` (the dense convolution of the
same weights).  No validation here (see :mod:`tabconv_np.sparse`).
"""
import numpy as np
from numba import prange

from ._jit import kernel


def _csr_cols(cols, data, indices, indptr, bias, out):
    """cols float32 (K, R), the lowered rows transposed; data float32 (nnz,); indices int32
    (nnz,) < K; indptr int32 (M+1,); bias float32 (M,); out float32 (M, R), written:
    ``out[o] = sum_p data[p] * cols[indices[p]] + bias[o]``, the sum from 0 in CSR order."""
    R = cols.shape[1]
    for o in prange(out.shape[0]):
        acc = out[o]
        acc[:] = 0
        for p in range(indptr[o], indptr[o + 1]):
            a = data[p]
            src = cols[indices[p]]
            for r in range(R):
                acc[r] += a * src[r]
        for r in range(R):
            acc[r] += bias[o]


csr_cols = kernel(_csr_cols)
