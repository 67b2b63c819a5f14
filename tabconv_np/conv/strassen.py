"""Strassen's matrix product, as the GEMM after im2col lowering (``method="strassen"``).

One level splits ``A`` (n x k) and ``B`` (k x p) into 2 x 2 blocks and forms
the product from 7 block products instead of 8, with 18 block additions::

    M1 = (A11 + A22)(B11 + B22)        C11 = M1 + M4 - M5 + M7
    M2 = (A21 + A22) B11               C12 = M3 + M5
    M3 = A11 (B12 - B22)               C21 = M2 + M4
    M4 = A22 (B21 - B11)               C22 = M1 - M2 + M3 + M6
    M5 = (A11 + A12) B22
    M6 = (A21 - A11)(B11 + B12)
    M7 = (A12 - A22)(B21 + B22)

``levels`` levels recurse on the block products while every dimension is at
least ``cutoff``; below that (and at the leaves) ``np.matmul`` (BLAS) runs.
Odd dimensions are padded with one zero row or column, which changes no
entry of the result.  Each level multiplies 7/8 as much; the additions cost
``O(n^2)`` memory passes, so on the shapes of small CNNs (thin matrices, a
tuned BLAS) Strassen is usually *slower* than one BLAS call: its value here
is the count and the teaching (bench/conv_layers.py reports it honestly).
Its rounding error grows with the levels (the sums mix terms of different
sizes); tests/test_reference_pairs.py states and checks the bound.
"""
import numpy as np

from ..geometry import im2col_rows

#: Smallest dimension a level splits; below it the product goes to BLAS.
CUTOFF = 64


def strassen(A, B, levels=1, cutoff=CUTOFF):
    """``A @ B`` by ``levels`` levels of Strassen's recursion (no validation).

    Parameters
    ----------
    A : float32 array (n, k)
    B : float32 array (k, p)
    levels : int >= 0
    cutoff : int
        A level runs only when n, k and p are all at least ``cutoff``.

    Returns
    -------
    float32 array (n, p)
    """
    n, k = A.shape
    p = B.shape[1]
    if levels == 0 or min(n, k, p) < cutoff:
        return np.matmul(A, B)
    if n % 2 or k % 2 or p % 2:                    # pad odd sizes with zeros, crop after
        A2 = np.zeros((n + n % 2, k + k % 2), A.dtype)
        B2 = np.zeros((k + k % 2, p + p % 2), B.dtype)
        A2[:n, :k], B2[:k, :p] = A, B
        return strassen(A2, B2, levels, cutoff)[:n, :p]
    h, c, q = n // 2, k // 2, p // 2
    A11, A12, A21, A22 = A[:h, :c], A[:h, c:], A[h:, :c], A[h:, c:]
    B11, B12, B21, B22 = B[:c, :q], B[:c, q:], B[c:, :q], B[c:, q:]
    sub = levels - 1
    M1 = strassen(A11 + A22, B11 + B22, sub, cutoff)
    M2 = strassen(A21 + A22, B11, sub, cutoff)
    M3 = strassen(A11, B12 - B22, sub, cutoff)
    M4 = strassen(A22, B21 - B11, sub, cutoff)
    M5 = strassen(A11 + A12, B22, sub, cutoff)
    M6 = strassen(A21 - A11, B11 + B12, sub, cutoff)
    M7 = strassen(A12 - A22, B21 + B22, sub, cutoff)
    C = np.empty((n, p), np.result_type(A, B))
    C[:h, :q] = M1 + M4 - M5 + M7
    C[:h, q:] = M3 + M5
    C[h:, :q] = M2 + M4
    C[h:, q:] = M1 - M2 + M3 + M6
    return C


def conv2d_strassen(x, weight, bias, stride, padding, dilation, groups, layout, out_hw, levels=1):
    """Convolution by im2col lowering and :func:`strassen` products, one per group (no validation).

    Arguments as :func:`tabconv_np.conv.im2col.conv2d_im2col`; ``levels``: Strassen levels.
    """
    rows, (N, Ho, Wo) = im2col_rows(x, weight.shape[2:], stride, padding, dilation, layout)
    C_out, Cg = weight.shape[:2]
    Kg, Cog = Cg * weight.shape[2] * weight.shape[3], C_out // groups
    y = np.empty((rows.shape[0], C_out), np.float32)
    for g in range(groups):
        wg = weight[g * Cog:(g + 1) * Cog].reshape(Cog, Kg)
        y[:, g * Cog:(g + 1) * Cog] = strassen(rows[:, g * Kg:(g + 1) * Kg], np.ascontiguousarray(wg.T),
                                               levels)
    if bias is not None:
        y += bias
    y = y.reshape(N, Ho, Wo, C_out)
    return np.ascontiguousarray(y if layout == "NHWC" else y.transpose(0, 3, 1, 2))


def strassen_cost(n, k, p, levels=1, cutoff=CUTOFF):
    """``(multiplications, additions)`` of :func:`strassen` on an (n, k) x (k, p) product.

    Mirrors the recursion: a BLAS leaf does ``n*k*p`` multiplications and
    ``n*(k-1)*p`` additions; a level pads odd sizes, then does 7 half-size
    products and 18 additions of half-size blocks (10 forming the operands,
    8 combining the products).
    """
    if levels == 0 or min(n, k, p) < cutoff:
        return n * k * p, n * max(k - 1, 0) * p
    n, k, p = n + n % 2, k + k % 2, p + p % 2
    h, c, q = n // 2, k // 2, p // 2
    mul, add = strassen_cost(h, c, q, levels - 1, cutoff)
    operand_adds = 5 * h * c + 5 * c * q                  # A11+A22, A21+A22, A11+A12, A21-A11, A12-A22; B likewise
    return 7 * mul, 7 * add + operand_adds + 8 * h * q
