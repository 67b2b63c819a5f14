"""Product-quantization kernels: encoding, table construction, lookup-accumulate.

One kernel per job (each a :class:`~tabconv_np.kernels._jit.Kernel`, with
``.parallel`` and ``.serial`` entries):

* :data:`encode` -- exhaustive nearest prototype of every row in every subspace;
* :data:`build_table` -- ``T[c, k, m] = <prototype(c, k), weight column m on subspace c>``;
* :data:`lookup` -- ``y[n, m] = sum_c T[c, code[n, c], m] (+ bias[m])``;
* :data:`kmeanspp` and :data:`centroid_sums` -- the sequential parts of
  k-means (seeding, centroid update; no ``prange``: serial in both entries).

Shapes follow :mod:`tabconv_np.pq`: ``D`` columns split into ``C`` contiguous
subspaces of ``Ds = ceil(D / C)`` columns; the columns past ``D`` of the last
subspace(s) are zeros (never materialised here: the kernels treat them as 0).

Like every kernel in this package these do no validation: float32 C-contiguous
inputs, codes ``< K`` and preallocated ``out`` of the right shape are the
caller's job (:mod:`tabconv_np.pq`, :mod:`tabconv_np.tables`).  Every output
element is computed by one thread with a fixed sequence of float32
operations, so the serial and the parallel kernel agree bitwise.

The plain NumPy versions of the same maths, for tests and for reading, are
in :mod:`tabconv_np.reference`.
"""
import numpy as np
from numba import prange

from ._jit import kernel

#: Rows encoded together: each prototype value is loaded once per block and
#: the inner loops run over the block's rows (contiguous, vectorised).
ENCODE_BLOCK = 64
#: Rows per vector register group: a partial block is rounded up to this.
_LANES = 16


def _encode(X, P, out):
    """Nearest prototype in each subspace.

    Parameters
    ----------
    X : float32 array (N, D)
        Rows to encode.
    P : float32 array (C, K, Ds)
        Prototypes; subspace ``c`` covers columns ``[c*Ds, min((c+1)*Ds, D))``
        of ``X``, the rest of its ``Ds`` columns being zeros.
    out : uint8/uint16/int array (N, C), written
        ``out[n, c] = argmin_k ||X[n, subspace c] - P[c, k]||^2`` (first k on ties).

    Notes
    -----
    The score minimised is ``0.5*||p||^2 - <x, p>`` (half the squared distance
    minus the constant ``0.5*||x||^2``): one multiply-add per dimension and
    prototype, ``K*Ds`` per row and subspace.  It is accumulated in float32 in
    the fixed order ``d = 0..Ds-1`` for every (row, prototype), so the result
    does not depend on blocking or threads.  Work items are (block of
    ``ENCODE_BLOCK`` rows, subspace) pairs, so even one row keeps ``C``
    threads busy; four prototypes are scored per pass over the block (each
    row value loaded once for four multiply-adds).  The plain loop this
    stands for::

        for n in range(N):
            for c in range(C):
                out[n, c] = argmin(0.5*(P[c]**2).sum(1) - P[c] @ xpad[n, c*Ds:(c+1)*Ds])
    """
    N, D = X.shape
    C, K, Ds = P.shape
    B = ENCODE_BLOCK
    nb = (N + B - 1) // B
    for t in prange(nb * C):
        b = t // C
        c = t - b * C
        r0 = b * B
        R = min(N, r0 + B) - r0
        Rp = min(B, (R + _LANES - 1) // _LANES * _LANES)   # rows computed (zeros past R)
        d0 = c * Ds
        dn = min(Ds, max(0, D - d0))          # real (non-padding) columns
        xt = np.zeros((Ds, B), np.float32)     # the block's sub-rows, transposed
        acc = np.empty((4, B), np.float32)
        best = np.empty(B, np.float32)
        arg = np.zeros(B, np.int64)
        for d in range(dn):
            for r in range(R):
                xt[d, r] = X[r0 + r, d0 + d]
        for r in range(Rp):
            best[r] = np.inf
        for k0 in range(0, K, 4):
            nk = min(4, K - k0)
            for j in range(nk):
                h = np.float32(0.0)
                for d in range(Ds):
                    h += P[c, k0 + j, d] * P[c, k0 + j, d]
                h = h * np.float32(0.5)
                for r in range(Rp):
                    acc[j, r] = h
            if nk == 4:
                for d in range(Ds):
                    p0 = P[c, k0, d]
                    p1 = P[c, k0 + 1, d]
                    p2 = P[c, k0 + 2, d]
                    p3 = P[c, k0 + 3, d]
                    for r in range(Rp):
                        x = xt[d, r]
                        acc[0, r] -= x * p0
                        acc[1, r] -= x * p1
                        acc[2, r] -= x * p2
                        acc[3, r] -= x * p3
            else:
                for j in range(nk):
                    for d in range(Ds):
                        p = P[c, k0 + j, d]
                        for r in range(Rp):
                            acc[j, r] -= xt[d, r] * p
            for j in range(nk):
                for r in range(Rp):
                    if acc[j, r] < best[r]:
                        best[r] = acc[j, r]
                        arg[r] = k0 + j
        for r in range(R):
            out[r0 + r, c] = arg[r]
    return out


def _build_table(P, W, out):
    """Dot products of every prototype with every weight column, per subspace.

    Parameters
    ----------
    P : float32 array (C, K, Ds)
        Prototypes.
    W : float32 array (D, M)
        Weight matrix (``B = weight.reshape(M, D).T``, BN already folded).
    out : float32 array (C, K, M), written
        ``out[c, k, m] = sum_{d < Ds, c*Ds+d < D} P[c, k, d] * W[c*Ds + d, m]``,
        summed in order of ``d``.

    Notes
    -----
    The plain loop::

        for c in range(C):
            out[c] = P[c, :, :dn] @ W[c*Ds : c*Ds + dn]     # dn real columns
    """
    C, K, Ds = P.shape
    D, M = W.shape
    for t in prange(C * K):
        c = t // K
        k = t - c * K
        d0 = c * Ds
        dn = min(Ds, max(0, D - d0))
        for m in range(M):
            out[c, k, m] = 0.0
        for d in range(dn):
            p = P[c, k, d]
            for m in range(M):
                out[c, k, m] += p * W[d0 + d, m]
    return out


def _lookup(codes, T, bias, has_bias, out):
    """Lookup-accumulate: ``out[n, m] = sum_c T[c, codes[n, c], m] (+ bias[m])``.

    Parameters
    ----------
    codes : uint8/uint16/int array (N, C)
        Prototype indices, each ``< K`` (not checked here).
    T : float32 array (C, K, M)
        Tables.
    bias : float32 array (M,)
        Added last when ``has_bias``.
    has_bias : bool
    out : float32 array (N, M), written

    Notes
    -----
    ``C`` lookups and ``C - 1`` adds per output (plus one bias add), in the
    order ``c = 0..C-1`` then bias.  The plain loop::

        for n in range(N):
            out[n] = T[0, codes[n, 0]]
            for c in range(1, C):
                out[n] += T[c, codes[n, c]]
            out[n] += bias
    """
    N, C = codes.shape
    M = T.shape[2]
    for n in prange(N):
        k0 = codes[n, 0]
        for m in range(M):
            out[n, m] = T[0, k0, m]
        for c in range(1, C):
            k = codes[n, c]
            for m in range(M):
                out[n, m] += T[c, k, m]
        if has_bias:
            for m in range(M):
                out[n, m] += bias[m]
    return out


def _kmeanspp(X, x2, first, u, out):
    """k-means++ seeding (D^2 sampling) of ``len(out)`` centres among the rows of ``X``.

    Parameters
    ----------
    X : float32 array (N, d)
    x2 : float32 array (N,)
        ``||X[n]||^2``.
    first : int
        Index of the first centre.
    u : float64 array (K,)
        Uniform draws in [0, 1) (``u[i]`` picks centre ``i >= 1``).
    out : int64 array (K,), written
        Row indices of the centres.

    Notes
    -----
    ``mind[n]`` is the squared distance of row n to its nearest centre so
    far; centre ``i`` is the first row whose running sum of ``mind`` exceeds
    ``u[i] * sum(mind)`` (sums in float64, in row order).  When every row
    sits on a centre (``sum(mind) == 0``) the row ``floor(u[i] * N)`` is
    taken.  The plain loop::

        mind = ((X - X[first])**2).sum(1)
        for i in range(1, K):
            c = searchsorted(cumsum(mind), u[i] * mind.sum(), side="right")
            mind = minimum(mind, ((X - X[c])**2).sum(1))
    """
    N, d = X.shape
    K = out.shape[0]
    mind = np.empty(N, np.float64)
    Xt = np.empty((d, N), np.float32)            # transposed: the dot products run along rows
    for n in range(N):
        for j in range(d):
            Xt[j, n] = X[n, j]
    s = np.empty(N, np.float32)
    out[0] = first
    s[:] = 0.0
    for j in range(d):                           # s[n] = <X[n], X[first]>, summed in order of j
        xc = X[first, j]
        for n in range(N):
            s[n] += Xt[j, n] * xc
    for n in range(N):
        v = np.float64(x2[n]) - 2.0 * np.float64(s[n]) + np.float64(x2[first])
        mind[n] = v if v > 0.0 else 0.0
    for i in range(1, K):
        total = 0.0
        for n in range(N):
            total += mind[n]
        c = N - 1
        if total <= 0.0:
            c = min(N - 1, int(u[i] * N))
        else:
            target = u[i] * total
            acc = 0.0
            for n in range(N):
                acc += mind[n]
                if acc > target:
                    c = n
                    break
        out[i] = c
        s[:] = 0.0
        for j in range(d):
            xc = X[c, j]
            for n in range(N):
                s[n] += Xt[j, n] * xc
        for n in range(N):
            v = np.float64(x2[n]) - 2.0 * np.float64(s[n]) + np.float64(x2[c])
            if v < 0.0:
                v = 0.0
            if v < mind[n]:
                mind[n] = v
    return out


def _centroid_sums(X, labels, sums, counts):
    """Per-cluster sums and counts: ``sums[labels[n]] += X[n]``, ``counts[labels[n]] += 1``.

    Parameters
    ----------
    X : float32 array (N, d)
    labels : int64 array (N,), values in [0, K)
    sums : float64 array (K, d), written
    counts : int64 array (K,), written

    Notes
    -----
    Serial (rows are added in order, in float64): the result does not depend
    on threads.
    """
    N, d = X.shape
    sums[:] = 0.0
    counts[:] = 0
    for n in range(N):
        k = labels[n]
        counts[k] += 1
        for j in range(d):
            sums[k, j] += X[n, j]
    return sums


encode = kernel(_encode)
build_table = kernel(_build_table)
lookup = kernel(_lookup)
kmeanspp = kernel(_kmeanspp)
centroid_sums = kernel(_centroid_sums)
