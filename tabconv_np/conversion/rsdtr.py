"""The RSDTR method: each converted convolution becomes a tensor ring of four cores (``RSDTRConv2d``).

**TR-SVD** (:func:`tr_svd`; Zhao et al. 2016) of a 4-way tensor ``T``
(n1, n2, n3, n4) at relative error ``eps``, with every SVD truncated to the
smallest rank whose discarded tail has norm at most
``delta = eps / sqrt(d - 1) * ||T||`` (d = 4; three SVDs, so ``||T - T_hat|| <= eps ||T||``):

1. SVD of the unfolding ``T (n1, n2*n3*n4)`` gives rank ``R``; split it as
   ``R = r0 * (R / r0)``: the first core is ``U`` reshaped to (r0, n1, R/r0)
   and the rest ``S V^T`` is carried on with ``r0`` moved to the end;
2. SVD of the carried matrix ``(R/r0 * n2, n3*n4*r0)``: the second core, rank ``r2``;
3. SVD of ``(r2 * n3, n4*r0)``: the third core, and ``S V^T`` is the fourth.

**The search** (:func:`decompose`; the paper's): for each of the 4 circular
shifts of the kernel's modes (C_out, C_in, kH, kW), and each divisor ``r0`` of
the first rank ``R`` of that shift, TR-SVD as above; the decomposition with the
fewest stored numbers wins (ties: the first shift, then the smallest r0).  The
cores are rotated back to the ring order (C_out, C_in, kH, kW).

**Settings.** ``eps`` per layer in (0, 1); ``convs="all"`` (every conv of a
converted switch) or ``"blocks"`` (only the 3x3 convolutions inside blocks, as
in the authors' code: the stem, 1x1 shortcuts and the classifier stay exact);
``refine="exact"`` refits the last sublayer's core and the bias by least squares
to the exact network's outputs on the calibration rows (default None: the
decomposition of the weights alone).  A Linear layer stays exact.

**Keep-exact rule** (``larger="keep"``, the default): a layer whose ring
would store more numbers than its dense kernel (the four cores against the
kernel) or cost more multiply-adds per image (the four sublayers against the
dense conv, :mod:`tabconv_np.ops`'s ``macs``, at the layer's input shape in the
network) stays exact, and the conversion says so: a note per layer in the
result (``ConversionResult.notes``, printed by the summary), ``exact (ring
...)`` in the per-layer column, and ``kept`` in the layer's record and
metadata, beside the rejected ranks.  Trained 3x3 kernels are nearly full rank,
so at small ``eps`` the rings are larger than the kernels (and the four
sublayers cost more than the dense conv even when the cores are smaller).
The data-free :func:`~tabconv_np.conversion.skeleton` knows no input shapes
and applies the parameter half of the rule only.  ``larger="convert"``
converts every layer regardless.
"""
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import ConfigError
from ..geometry import to_rows
from ..rsdtr import CORES, RSDTRConv2d
from ..validate import as_choice, in_unit_interval
from .calibration import apply
from .method import Method, convolution_or_keep, register_method

#: Ridge (relative to the mean squared feature) of the output refit.
RIDGE = 1e-6


def truncation_rank(S, delta):
    """The smallest ``r >= 1`` with ``sqrt(sum(S[r:]**2)) <= delta`` (S descending)."""
    tail = np.sqrt(np.cumsum((S ** 2)[::-1]))[::-1]            # tail[r] = ||S[r:]||
    return max(1, int(np.sum(tail > delta)))


def _svd(M, delta):
    U, S, Vt = np.linalg.svd(M, full_matrices=False)
    r = truncation_rank(S, delta)
    return U[:, :r], S[:r, None] * Vt[:r]


def tr_svd(T, eps, r0, first=None):
    """TR-SVD of the 4-way ``T`` (module docstring) with the first rank split as ``r0 x R/r0``.

    ``first``: the truncated first SVD ``(U, SVt)`` if already computed.  Returns the
    cores ``[(r0, n1, ra), (ra, n2, rb), (rb, n3, rc), (rc, n4, r0)]`` (float64).
    """
    n = T.shape
    delta = eps / np.sqrt(T.ndim - 1) * np.linalg.norm(T)
    U, C = first if first is not None else _svd(T.reshape(n[0], -1), delta)
    R = U.shape[1]
    ra = R // r0
    cores = [U.reshape(n[0], r0, ra).transpose(1, 0, 2)]
    C = C.reshape(r0, ra, -1).transpose(1, 2, 0)                     # (ra, n2*n3*n4, r0)
    r = ra
    for k in (1, 2):
        M = C.reshape(r * n[k], -1)
        U, C = _svd(M, delta)
        cores.append(U.reshape(r, n[k], -1))
        r = U.shape[1]
    cores.append(C.reshape(r, n[3], r0))
    return cores


def decompose(W, eps):
    """The smallest-storage ring of ``W`` (C_out, C_in, kH, kW) over shifts and divisors.

    Returns
    -------
    cores : list of 4 float64 arrays
        ``core_out (r3, C_out, r0), core_in (r0, C_in, r1), core_h (r1, kH, r2),
        core_w (r2, kW, r3)``.
    info : dict
        ``shift`` (the first mode of the winning order), ``r0_split`` (the divisor),
        ``ranks`` (r0, r1, r2, r3), ``candidates`` (decompositions tried).
    """
    with threadpool_limits(1, "blas"):     # small SVDs: on a busy 2-core machine threaded LAPACK
        return _search(np.asarray(W, np.float64), eps)    # measured ~100x slower than one thread


def _search(W, eps):
    delta = eps / np.sqrt(W.ndim - 1) * np.linalg.norm(W)
    best, tried = None, 0
    for shift in range(4):
        order = [(shift + m) % 4 for m in range(4)]
        T = W.transpose(order)
        first = _svd(T.reshape(T.shape[0], -1), delta)
        R = first[0].shape[1]
        for r0 in (d for d in range(1, R + 1) if R % d == 0):
            cores = tr_svd(T, eps, r0, first)
            tried += 1
            size = sum(c.size for c in cores)
            if best is None or size < best[0]:
                best = (size, shift, r0, [cores[order.index(m)] for m in range(4)])
    _, shift, r0, cores = best
    ranks = (cores[1].shape[0], cores[2].shape[0], cores[3].shape[0], cores[0].shape[0])
    return cores, {"shift": shift, "r0_split": r0, "ranks": ranks, "candidates": tried}


def rsdtr_layer(conv, eps):
    """The ``RSDTRConv2d`` replacing ``conv`` (Conv2d, groups 1) at relative error ``eps``, and
    the search's info (:func:`decompose`) with the achieved ``kernel_error``,
    ``||W - W_hat|| / ||W||``."""
    W = conv.params["weight"].astype(np.float64)
    cores, info = decompose(W, eps)
    layer = RSDTRConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                        conv.padding, conv.dilation, info["ranks"])
    for name, c in zip(("core_out", "core_in", "core_h", "core_w"), cores):
        layer.params[name][...] = c
    if "bias" in conv.params:
        layer.params["bias"][...] = conv.params["bias"]
    info["kernel_error"] = float(np.linalg.norm(layer.kernel() - W) / max(np.linalg.norm(W), 1e-300))
    return layer, info


def ring_growth(ring, conv, in_shape=None):
    """``(parameter ratio, MAC ratio)`` of ``ring`` (an ``RSDTRConv2d``) to the dense ``conv`` it
    replaces: the cores against the kernel (both keep the same bias), the multiply-adds per image
    at ``in_shape`` (C_in, H, W) against the dense conv's (None without a shape)."""
    cores = sum(ring.params[c].size for c in CORES)
    macs = None if in_shape is None else ring.cost(in_shape)["macs"] / conv.cost(in_shape)["macs"]
    return cores / conv.params["weight"].size, macs


def _kept_reason(growth):
    """Why a ring of ``growth`` (:func:`ring_growth`) is kept exact, or None when it is smaller."""
    params, macs = growth
    said = [f"{params:.2f}x the kernel's parameters" if params > 1 else "",
            f"{macs:.2f}x its MACs" if macs is not None and macs > 1 else ""]
    said = [t for t in said if t]
    return f"the ring would have {' and '.join(said)}" if said else None


def compression_ratios(network, exact):
    """The paper's PCR and FCR of a converted network against the exact one:
    ``PCR = params(exact) / params(network)``, ``FCR = MACs(exact) / MACs(network)`` (whole
    networks, conv + linear MACs per image, :mod:`tabconv_np.ops`; the paper's FLOPs count
    multiply-adds of the convolutions and the fully connected layer)."""
    from ..ops import count_ops
    t, e = count_ops(network).total, count_ops(exact).total
    return {"pcr": e["params"] / t["params"], "fcr": e["macs"] / t["macs"], "params": t["params"],
            "exact_params": e["params"], "macs": t["macs"], "exact_macs": e["macs"]}


@dataclass(frozen=True)
class RSDTRSettings:
    """Settings of the RSDTR method.

    Attributes
    ----------
    eps : float in (0, 1), list or dict
        ``eps_p`` per layer (per-layer forms as in :mod:`tabconv_np.conversion.settings`).
    convs : {"all", "blocks"}
        Every conv of a converted switch, or only the 3x3 convs inside blocks.
    refine : {None, "exact"}
        Refit the last core and the bias to the exact network's outputs, or not.
    larger : {"keep", "convert"}
        A layer whose ring has more parameters or MACs than the dense conv stays exact
        (the module docstring's keep-exact rule), or is converted anyway.
    """

    eps: object = 0.3
    convs: str = "all"
    refine: object = None
    larger: str = "keep"

    def __post_init__(self):
        as_choice(self.refine, "convert: refine", (None, "exact"))
        as_choice(self.convs, "convert: convs", ("all", "blocks"))
        as_choice(self.larger, "convert: larger", ("keep", "convert"))


class RSDTR(Method):
    """Tensor-ring decomposition of each kernel at relative error eps, run as four sublayers."""

    name = "rsdtr"
    label = "ranks r0xr1xr2xr3, kernel error"
    Settings = RSDTRSettings
    per_layer = ("eps",)

    def resolve(self, path, layer, values, settings):
        keep = convolution_or_keep(self.name, path, layer)
        if keep:
            return keep
        eps = values["eps"]
        if not in_unit_interval(eps, "(0, 1)"):
            raise ConfigError(f"convert: eps for {path} must be in (0, 1), got {eps!r}")
        if settings.convs == "blocks" and (layer.kernel_size != (3, 3) or "." not in path):
            return {"keep": "not a 3x3 conv inside a block (convs='blocks')"}
        return {"eps": float(eps)}

    def fit(self, data, ls, settings, rng):
        if "keep" in ls:
            return data.layer, {"kept": ls["keep"]}
        layer, info = rsdtr_layer(data.layer, ls["eps"])
        W = data.layer.params["weight"]
        pcr = (W.size + W.shape[0]) / sum(v.size for v in layer.params.values())
        record = {"eps": ls["eps"], **info, "layer_pcr": pcr, "refine": settings.refine}
        x = data.xa
        growth = ring_growth(layer, data.layer, x.shape[1:] if data.layout == "NCHW"
                             else (x.shape[3], x.shape[1], x.shape[2]))
        record["param_growth"], record["mac_growth"] = growth
        why = _kept_reason(growth) if settings.larger == "keep" else None
        if why:
            data.notes.append(f"{data.path} kept exact at eps {ls['eps']:g}: {why} "
                              f"(ranks {'x'.join(map(str, info['ranks']))}; larger='convert' converts it)")
            return data.layer, {**record, "kept": why}
        return layer, record

    def refine(self, new, data, ls, settings, rng):
        """Least squares of sublayer 4 (the core over (r3, C_out, r0)) and the bias on ``z3``."""
        if "keep" in ls or not settings.refine or not isinstance(new, RSDTRConv2d):
            return None
        Z = to_rows(np.concatenate([new.features(data.xa[i:i + 250], data.layout)
                                    for i in range(0, len(data.xa), 250)]), "NHWC")
        Y = data.target_rows(True)[0]
        if len(Z) > data.max_rows:
            sel = np.sort(rng.choice(len(Z), data.max_rows, replace=False))
            Z, Y = Z[sel], Y[sel]
        Z1 = np.hstack([Z, np.ones((len(Z), 1), np.float32)]).astype(np.float64)
        G = Z1.T @ Z1
        G[np.diag_indices(len(G) - 1)] += RIDGE * np.trace(G) / len(G)
        coef = np.linalg.solve(G, Z1.T @ Y.astype(np.float64))          # (r0*r3 + 1, C_out)
        r0, r3 = new.ranks[0], new.ranks[3]
        new.params["core_out"][...] = coef[:-1].reshape(r0, r3, -1).transpose(1, 2, 0)
        new.params["bias"][...] = coef[-1]
        return apply(new, data.xa, data.layout)

    def skeleton(self, layer, ls, settings):
        if "keep" in ls:
            return layer
        _, info = decompose(layer.params["weight"], ls["eps"])
        ring = RSDTRConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                           layer.padding, layer.dilation, info["ranks"])
        if settings.larger == "keep" and _kept_reason(ring_growth(ring, layer)):
            return layer
        return ring

    def describe(self, record):
        ring = f"{'x'.join(map(str, record['ranks']))},{record['kernel_error']:.3f}" if "ranks" in record else ""
        if "kept" in record:
            return f"exact (ring {ring}: larger)" if ring else "exact"
        return ring

    def network_meta(self, settings):
        return {"convs": settings.convs, "refine": settings.refine, "larger": settings.larger}

    def layer_meta(self, record):
        if "ranks" not in record:
            return None
        meta = {"eps": record["eps"], "ranks": list(record["ranks"]), "shift": record["shift"],
                "r0_split": record["r0_split"], "kernel_error": record["kernel_error"]}
        return {**meta, "kept": record["kept"]} if "kept" in record else meta


register_method(RSDTR())
