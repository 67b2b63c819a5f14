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
from .kernels import treefit_kernels as _fk
from .kernels._jit import pick
from .pq import subspace_length
from .threads import get_num_threads
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


def fit_trees(X, n_codebooks, candidates=4):
    """Learn one depth-4 tree per subspace of the rows ``X`` (see the module docstring).

    Parameters
    ----------
    X : float32 array (N, D)
        Finite training rows, N >= 2.
    n_codebooks : int
        ``C`` subspaces, ``1 <= C <= D``, none of them empty: ``(C - 1) * ceil(D / C) < D``.
    candidates : int
        Columns tried at each level (the highest-error ones).

    Returns
    -------
    HashTrees
        Bitwise those of :func:`tabconv_np.reference.fit_trees_naive`, which
        defines the learning (summation orders and ties included); the kernel
        (:mod:`tabconv_np.kernels.treefit_kernels`) learns the subspaces in
        parallel.
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
    filled = subspace_length(D, Ds)                             # subspaces with columns
    if filled < C:
        raise ConfigError(f"fit_trees: n_codebooks = {C} cuts D = {D} columns into subspaces of "
                          f"ceil({D}/{C}) = {Ds}, which leaves {C - filled} of them empty; "
                          f"use n_codebooks = {filled}")
    cols = np.empty((C, DEPTH), np.int32)
    thr = np.empty((C, N_LEAVES), np.float32)
    P = np.empty((C, N_LEAVES, Ds), np.float32)
    fit = pick(_fk.fit, N * D * DEPTH * min(cand, Ds))
    tasks = min(C, get_num_threads()) if fit is _fk.fit.parallel else 1
    fit(X, Ds, min(cand, Ds), tasks, cols, thr, P)
    return HashTrees(cols, thr, P, D)


def warmup():
    """Compile (or load from the on-disk cache) the learning kernel, serial and parallel."""
    X = np.random.default_rng(0).standard_normal((20, 6)).astype(np.float32)
    for fn in _fk.fit:                                          # parallel, serial
        fn(X, 3, 2, 2, np.empty((2, DEPTH), np.int32), np.empty((2, N_LEAVES), np.float32),
           np.empty((2, N_LEAVES, 3), np.float32))
    return True


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
