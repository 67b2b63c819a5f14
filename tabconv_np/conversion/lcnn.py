"""The LCNN method: each converted convolution becomes a lookup-based convolution (``LCNNConv2d``).

1. **Dictionary learning on the weights** (:func:`learn_dictionary`). The
   ``kh*kw*C_out`` filter vectors ``v = W[o, :, i, j]`` (length ``C_in``) are
   the training set.  ``k`` unit atoms ``D`` (k, C_in) and codes with ``s``
   non-zeros per vector minimise ``sum ||v - sum_t c_t D[a_t]||^2`` by
   alternating

   - sparse coding by orthogonal matching pursuit (:func:`omp`): ``s`` times,
     pick the unused atom of largest ``|<residual, atom>|``, then refit all
     chosen coefficients by least squares;
   - the atom update by least squares, ``D = argmin ||V - A D||_F`` with the
     codes ``A`` (N, k) fixed (normal equations ``A^T A D = A^T V``); an atom
     no vector uses is replaced by the worst-represented vector; atoms are
     renormalised.

   Seeded (the initial atoms are a random choice of vectors) and deterministic.
2. **Refit to the outputs** (``refine="exact"``, the default): with the atoms
   and the supports fixed, the coefficients of each output channel and its
   bias are refit by least squares so that the layer reproduces the exact
   network's output on the calibration rows, from what the converted layers
   before it produce.  Every output value is linear in its ``s*kh*kw``
   coefficients (:class:`~tabconv_np.lcnn.LCNNConv2d`), so this is one small
   regression per output channel, all from one Gram matrix of the im2col rows
   of the dictionary maps.

Per layer: ``atoms`` (k, at most ``kh*kw*C_out``) and ``sparsity`` (s, at
most k).  Convolutions with groups 1 only; a Linear layer in a converted
switch (the classifier) stays exact.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..geometry import ConvGeometry
from ..lcnn import LCNNConv2d
from ..validate import as_choice, as_int
from .calibration import BATCH, apply
from .method import Method, convolution_or_keep, register_method

#: Ridge (relative to the mean diagonal of the Gram matrix) of the output refit and the atom
#: update; the sparse coding uses :data:`OMP_RIDGE`, small enough that a full dictionary
#: (k = s = C_in) reconstructs the filters to float32 precision.
RIDGE = 1e-8
OMP_RIDGE = 1e-13
#: Most lowered map values held at once by the output refit (float32: 64 MB).
LOWERED_FLOATS = 1 << 24


@dataclass(frozen=True)
class LCNNSettings:
    """Settings of the LCNN method.

    Attributes
    ----------
    atoms : int, list or dict
        ``k`` per layer (per-layer forms as in :mod:`tabconv_np.conversion.settings`).
    sparsity : int, list or dict
        ``s`` per layer.
    iters : int
        Dictionary-learning iterations (OMP + atom update).
    refine : {"exact", None}
        Refit the coefficients on their supports, and the bias, to the outputs.
    """

    atoms: object = 32
    sparsity: object = 2
    iters: int = 10
    refine: object = "exact"

    def __post_init__(self):
        as_choice(self.refine, "convert: refine", (None, "exact"))
        as_int(self.iters, "convert: iters", 0)


def _solve(G, b, ridge=RIDGE):
    """Batched ridge solve of ``G x = b``; G (..., t, t), b (..., t)."""
    t = G.shape[-1]
    lam = ridge * np.trace(G, axis1=-2, axis2=-1)[..., None, None] / t + 1e-300
    return np.linalg.solve(G + lam * np.eye(t), b[..., None])[..., 0]


def omp(V, D, s):
    """Orthogonal matching pursuit of every row of ``V`` over the unit atoms ``D``.

    Parameters
    ----------
    V : float64 (N, m)
    D : float64 (k, m), rows of unit norm
    s : int, at most k

    Returns
    -------
    idx : int (N, s)
        The atoms chosen, in the order chosen (all distinct per row).
    coef : float64 (N, s)
        The least-squares coefficients on them: ``V[n] ~ coef[n] @ D[idx[n]]``.
    """
    N, k = len(V), len(D)
    G, corr = D @ D.T, V @ D.T
    idx = np.zeros((N, s), np.int64)
    used = np.zeros((N, k), bool)
    rows = np.arange(N)
    R = V
    for t in range(s):
        c = np.abs(R @ D.T)
        c[used] = -1.0
        idx[:, t] = np.argmax(c, axis=1)               # ties: the lowest atom index
        used[rows, idx[:, t]] = True
        sel = idx[:, :t + 1]
        coef = _solve(G[sel[:, :, None], sel[:, None, :]], corr[rows[:, None], sel], OMP_RIDGE)
        R = V - np.einsum("nt,ntm->nm", coef, D[sel])
    return idx, coef


def _unit(D, fallback):
    """Rows of ``D`` scaled to unit norm; a zero row replaced by the unit ``fallback`` row."""
    n = np.linalg.norm(D, axis=1)
    D = np.where(n[:, None] > 1e-12 * max(n.max(), 1e-300), D, fallback)
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def learn_dictionary(V, k, s, iters, rng):
    """Dictionary learning (module docstring, step 1): ``(D (k, m), idx (N, s), coef (N, s))``.

    V : float64 (N, m) with ``k <= N``; the result is a deterministic function of ``V``,
    ``k``, ``s``, ``iters`` and the state of ``rng``.
    """
    N, m = V.shape
    spare = rng.standard_normal((k, m))
    D = _unit(V[np.sort(rng.choice(N, k, replace=False))], spare)
    for _ in range(iters):
        idx, coef = omp(V, D, s)
        A = np.zeros((N, k))
        np.add.at(A, (np.arange(N)[:, None], idx), coef)
        unused = np.flatnonzero(~(A != 0).any(axis=0))
        AtA = A.T @ A
        D = np.linalg.solve(AtA + (RIDGE * np.trace(AtA) / k + 1e-300) * np.eye(k), A.T @ V)
        if len(unused):
            err = np.linalg.norm(V - np.einsum("nt,ntm->nm", coef, D[idx]), axis=1)
            D[unused] = V[np.argsort(-err, kind="stable")[:len(unused)]]
        D = _unit(D, spare)
    idx, coef = omp(V, D, s)
    return D, idx, coef


def fit_lcnn(conv, k, s, iters, rng):
    """The LCNN layer approximating ``conv`` (Conv2d, groups 1) from its weights alone."""
    W = conv.params["weight"].astype(np.float64)
    C_out, C_in, kh, kw = W.shape
    V = W.transpose(0, 2, 3, 1).reshape(-1, C_in)           # vector (o, i, j) = W[o, :, i, j]
    D, idx, coef = learn_dictionary(V, k, s, iters, rng)
    shape = (C_out, kh, kw, s)
    return LCNNConv2d.from_parts(conv, D, idx.reshape(shape), coef.reshape(shape),
                                 conv.params.get("bias"))


class LCNN(Method):
    """Lookup-based convolution: a learned dictionary and sparse codes, refit to the outputs."""

    name = "lcnn"
    label = "atoms, sparsity"
    Settings = LCNNSettings
    per_layer = ("atoms", "sparsity")

    def resolve(self, path, layer, values, settings):
        keep = convolution_or_keep(self.name, path, layer)
        if keep:
            return keep
        kh, kw = layer.kernel_size
        k = as_int(values["atoms"], f"convert: atoms for {path}", 1)
        s = as_int(values["sparsity"], f"convert: sparsity for {path}", 1)
        if k > kh * kw * layer.out_channels:
            raise ConfigError(f"convert: atoms k = {k} for {path} exceeds its kh*kw*C_out = "
                              f"{kh * kw * layer.out_channels} filter vectors")
        if s > k:
            raise ConfigError(f"convert: sparsity s = {s} for {path} exceeds its atoms k = {k}")
        return {"k": k, "s": s}

    def fit(self, data, ls, settings, rng):
        if "keep" in ls:
            return data.layer, {"kept": ls["keep"]}
        new = fit_lcnn(data.layer, ls["k"], ls["s"], settings.iters, rng)
        return new, {"k": ls["k"], "s": ls["s"], "refine": settings.refine}

    def refine(self, new, data, ls, settings, rng):
        """Least squares of each output channel's coefficients (on their atoms) and bias."""
        if "keep" in ls or not settings.refine:
            return None
        k = ls["k"]
        kh, kw = new.kernel_size
        g = ConvGeometry(k, new.out_channels, new.kernel_size, new.stride, new.geometry.padding_spec,
                         new.dilation)
        n = data.n_rows()
        sel = np.sort(rng.choice(n, data.max_rows, replace=False)) if n > data.max_rows else None
        G, B = 0.0, 0.0
        Y = data.target_rows(True)[0]
        x, per = data.x, n // len(data.x)
        step = max(1, min(BATCH, LOWERED_FLOATS // (per * k * kh * kw)))     # images per chunk
        for i0 in range(0, len(x), step):
            rows, _ = g.lower(new.maps(x[i0:i0 + step], data.layout), "NHWC")  # (rows, k*kh*kw)
            y = Y[i0 * per:(i0 + step) * per]
            if sel is not None:
                lo, hi = np.searchsorted(sel, [i0 * per, min(len(x), i0 + step) * per])
                rows, y = rows[sel[lo:hi] - i0 * per], y[sel[lo:hi] - i0 * per]
            A = np.hstack([rows, np.ones((len(rows), 1), np.float32)]).astype(np.float64)
            G, B = G + A.T @ A, B + A.T @ y.astype(np.float64)
        p = new.params
        ij = (np.arange(kh)[:, None, None] * kw + np.arange(kw)[None, :, None])   # (kh, kw, 1)
        cols = (p["indices"] * (kh * kw) + ij).reshape(new.out_channels, -1)       # column of (a, i, j)
        cols = np.hstack([cols, np.full((len(cols), 1), G.shape[0] - 1)])          # and the bias
        sol = _solve(G[cols[:, :, None], cols[:, None, :]], B[cols, np.arange(len(cols))[:, None]])
        p["coefs"][...] = sol[:, :-1].reshape(p["coefs"].shape)
        p["bias"][...] = sol[:, -1]
        return apply(new, data.xa, data.layout)

    def skeleton(self, layer, ls, settings):
        if "keep" in ls:
            return layer
        return LCNNConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, layer.dilation, ls["k"], ls["s"])

    def describe(self, record):
        return "exact" if "kept" in record else f"k={record['k']},s={record['s']}"

    def network_meta(self, settings):
        return {"refine": settings.refine, "iters": settings.iters}

    def layer_meta(self, record):
        return None if "kept" in record else [record["k"], record["s"]]


register_method(LCNN())
