"""MADDNESS hash trees: learning the trees, encoding rows, 8-bit tables.

A row of ``D`` numbers is cut into ``C`` contiguous subspaces of
``Ds = ceil(D / C)`` columns, as in :mod:`tabconv_np.pq` (for a convolution
with ``Ds = kh*kw`` a subspace is one input channel's window: the subspaces
are aligned to the kernel).  Each subspace gets a balanced binary tree of
depth 4 instead of a nearest-prototype search: its code is the leaf a row
reaches by 4 comparisons, ``K = 16`` leaves (Blalock & Guttag, ICML 2021)::

    trees = fit_trees(rows, n_codebooks=C)      # learned on calibration rows
    codes = encode(rows, trees)                  # (N, C) uint8 in [0, 16)
    approx = decode(codes, trees)                # (N, D): the leaves' means

Learning (:func:`fit_trees`), greedily level by level in each subspace: every
node of level ``t`` splits on the same column, chosen among the
``candidates`` columns of largest squared error summed over the level's
buckets; each node gets its own threshold, the one that minimises the summed
squared error of its two children over all the subspace's columns (sort by
the column, cumulative sums).  The prototypes are the leaves' means.

Tables (:func:`quantize_tables`) go to 8 bits with a per-(codebook, output)
offset, which folds into the bias, and a per-output scale:
``T[c, k, m] ~= T8[c, k, m] * step[m] + low[c, m]``.
"""
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, ShapeError
from .kernels import tree_kernels as _k
from .kernels._jit import pick
from .pq import subspace_length
from .validate import as_int

#: Tree depth and leaves per tree.
DEPTH, N_LEAVES = _k.DEPTH, 1 << _k.DEPTH


@dataclass
class HashTrees:
    """Learned trees of ``C`` subspaces.

    Attributes
    ----------
    split_cols : int32 array (C, 4)
        Column of the row compared at each level (absolute, in ``[0, D)``).
    thresholds : float32 array (C, 16)
        Node thresholds, heap-indexed: level ``t``, node ``j`` at ``2**t - 1 + j``
        (entry 15 unused, 0).
    prototypes : float32 array (C, 16, Ds)
        Mean of the training sub-rows that reach each leaf (zeros for empty leaves
        and for the padding columns of the last subspace).
    D : int
    """

    split_cols: np.ndarray
    thresholds: np.ndarray
    prototypes: np.ndarray
    D: int

    @property
    def C(self):
        return self.split_cols.shape[0]


def _best_split(S, v):
    """``(loss, threshold)``: the split of bucket rows ``S`` (n, ds) float64 on values ``v`` (n,)
    float32 that minimises the children's summed squared error."""
    n = len(v)
    if n < 2:
        return 0.0, np.float32(v.max() if n else 0.0)
    order = np.argsort(v, kind="stable")
    vs, Y = v[order], S[order]
    cum, cum2 = np.cumsum(Y, 0), np.cumsum(Y * Y, 0)
    i = np.arange(1, n)                                        # left = first i rows
    left = (cum2[:-1] - cum[:-1] ** 2 / i[:, None]).sum(1)
    right = ((cum2[-1] - cum2[:-1]) - (cum[-1] - cum[:-1]) ** 2 / (n - i)[:, None]).sum(1)
    loss = left + right
    loss[vs[:-1] == vs[1:]] = np.inf                           # only between distinct values
    j = int(np.argmin(loss))
    if not np.isfinite(loss[j]):                               # all values equal: no split
        return float((cum2[-1] - cum[-1] ** 2 / n).sum()), np.float32(vs[-1])
    t = np.float32((np.float64(vs[j]) + np.float64(vs[j + 1])) / 2)
    if not vs[j] <= t < vs[j + 1]:                             # float32 midpoint rounded onto vs[j+1]
        t = vs[j]
    return float(loss[j]), t


def fit_trees(X, n_codebooks, candidates=4):
    """Learn one depth-4 tree per subspace of the rows ``X`` (see the module docstring).

    Parameters
    ----------
    X : float32 array (N, D)
        Finite training rows, N >= 2.
    n_codebooks : int
        ``C`` subspaces, ``1 <= C <= D``.
    candidates : int
        Columns tried at each level (the highest-error ones).

    Returns
    -------
    HashTrees
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 2 or X.dtype.kind != "f":
        raise ShapeError(f"fit_trees: expected float rows (N >= 2, D), got {X.dtype} {X.shape}")
    if not np.isfinite(X).all():
        raise ShapeError("fit_trees: training rows contain NaN or Inf")
    X = np.ascontiguousarray(X, np.float32)
    N, D = X.shape
    C = as_int(n_codebooks, f"fit_trees: n_codebooks (D = {D})", 1, D)
    cand = as_int(candidates, "fit_trees: candidates", 1)
    Ds = subspace_length(D, C)
    cols = np.zeros((C, DEPTH), np.int32)
    thr = np.zeros((C, N_LEAVES), np.float32)
    P = np.zeros((C, N_LEAVES, Ds), np.float32)
    for c in range(C):
        lo, hi = c * Ds, min((c + 1) * Ds, D)
        V = X[:, lo:hi]
        S = V.astype(np.float64)
        buckets = [np.arange(N)]
        for t in range(DEPTH):
            sse = sum(((S[b] - S[b].mean(0)) ** 2).sum(0) for b in buckets if len(b))
            best = None
            for d in np.argsort(-sse, kind="stable")[:cand]:
                splits = [_best_split(S[b], V[b, d]) for b in buckets]
                total = sum(s[0] for s in splits)
                if best is None or total < best[0]:
                    best = (total, int(d), [s[1] for s in splits])
            _, d, ts = best
            cols[c, t] = lo + d
            children = []
            for j, (b, th) in enumerate(zip(buckets, ts)):
                thr[c, (1 << t) - 1 + j] = th
                right = V[b, d] > th
                children += [b[~right], b[right]]
            buckets = children
        for k, b in enumerate(buckets):
            if len(b):
                P[c, k, :hi - lo] = S[b].mean(0)
    return HashTrees(cols, thr, P, D)


def encode(X, trees):
    """Codes ``(N, C)`` uint8 of float rows ``X`` (N, D); a row with a NaN among the values its
    trees read is refused (ShapeError), never given a code."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != trees.D:
        raise ShapeError(f"hash-tree encode: expected rows (N, {trees.D}), got {X.shape}")
    X = np.ascontiguousarray(X, np.float32)
    if not np.isfinite(X[:, np.unique(trees.split_cols)]).all():
        raise ShapeError("hash-tree encode: rows contain NaN or Inf where the trees read them")
    out = np.empty((X.shape[0], trees.C), np.uint8)
    if out.size:
        pick(_k.encode_rows, out.size * DEPTH)(X, trees.split_cols, trees.thresholds, out)
    return out


def decode(codes, trees):
    """Rows ``(N, D)`` rebuilt from codes: each subspace's leaf mean."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != trees.C or (codes.size and codes.max() >= N_LEAVES):
        raise ShapeError(f"hash-tree decode: expected codes (N, {trees.C}) below {N_LEAVES}, got {codes.shape}")
    out = trees.prototypes[np.arange(trees.C)[None, :], codes.astype(np.intp)]    # (N, C, Ds)
    return out.reshape(len(codes), -1)[:, :trees.D]


def quantize_tables(T):
    """8-bit tables: ``T[c, k, m] ~= T8[c, k, m] * step[m] + low[c, m]``.

    ``low[c, m]`` is the smallest entry of codebook ``c`` for output ``m``;
    ``step[m]`` spreads the largest range over all codebooks of output ``m``
    on 0..255.  Rounding error per entry ``<= step[m] / 2``; a sum over ``C``
    codebooks ``<= C * step[m] / 2``.

    Parameters
    ----------
    T : float array (C, K, M)

    Returns
    -------
    T8 : uint8 array (C, K, M)
    step : float32 array (M,)
    offset : float32 array (M,)
        ``sum_c low[c, m]``: what the bias absorbs.
    """
    T = np.asarray(T, np.float64)
    if T.ndim != 3 or not np.isfinite(T).all():
        raise ConfigError(f"quantize_tables: expected a finite (C, K, M) table, got shape {T.shape}")
    low = T.min(axis=1)                                        # (C, M)
    span = (T.max(axis=1) - low).max(axis=0)                   # (M,)
    step = np.where(span > 0, span / 255.0, 1.0)
    T8 = np.rint((T - low[:, None, :]) / step).clip(0, 255).astype(np.uint8)
    return T8, step.astype(np.float32), low.sum(0).astype(np.float32)
