"""The low-rank method: each converted layer becomes two thinner layers of rank ``r``.

A convolution's lowered weight ``W`` (C_out, C*kh*kw) is factored by the SVD,
``W = U S V^T``, and truncated to ``r`` singular values::

    conv(x, W) ~= conv1x1( conv(x, V_r^T reshaped to (r, C, kh, kw)), U_r S_r ) + bias

so the layer becomes a ``kh x kw`` convolution to ``r`` channels (same
stride, padding, dilation) followed by a 1x1 convolution to ``C_out``; a
linear layer becomes two linear layers through ``r`` features.  The MACs per
output position drop from ``C*kh*kw*C_out`` to ``r*(C*kh*kw + C_out)``.

``rank`` per layer: an int (clipped to the full rank ``min(C_out, C*kh*kw)``,
where the factorisation is exact up to rounding), or ``"auto"``: the smallest
``r`` keeping ``energy`` of the squared singular values.  ``refine="exact"``
(the default) then refits the second factor and the bias by least squares on
the calibration rows so that the pair reproduces the exact network's output
at that point (matrix regression on the outputs, not the weights: the
Tucker/SVD literature's "reconstruct to outputs"); ``refine=None`` keeps the
plain truncated SVD.
"""
from dataclasses import dataclass

import numpy as np

from ..blocks import Sequential
from ..errors import ConfigError
from ..geometry import to_rows
from ..layers import Conv2d, Linear
from ..validate import as_choice
from .calibration import apply
from .method import Method, register_method

#: Ridge (relative to the mean squared activation) of the output refit.
RIDGE = 1e-6


@dataclass(frozen=True)
class LowRankSettings:
    """Settings of the low-rank method.

    Attributes
    ----------
    rank : int, "auto", list or dict
        ``r`` per layer (per-layer forms as in :mod:`tabconv_np.conversion.settings`).
    energy : float in (0, 1]
        With ``rank="auto"``: the fraction of the squared singular values kept.
    refine : {"exact", None}
        Refit the second factor and bias to the exact network's output here, or not.
    """

    rank: object = "auto"
    energy: float = 0.95
    refine: object = "exact"

    def __post_init__(self):
        as_choice(self.refine, "convert: refine", (None, "exact"))
        if not (isinstance(self.energy, (int, float)) and 0 < self.energy <= 1):
            raise ConfigError(f"convert: energy must be in (0, 1], got {self.energy!r}")


def _matrix(layer):
    """The layer's weight as (outputs, inputs), the factorisation's matrix."""
    if isinstance(layer, Linear):
        return layer.params["weight"]
    return layer.params["weight"].reshape(layer.out_channels, -1)


def factor_layer(layer, r):
    """The rank-``r`` truncated-SVD pair replacing ``layer`` (Conv2d, groups 1, or Linear)."""
    Uf, S, Vt = np.linalg.svd(_matrix(layer).astype(np.float64), full_matrices=False)
    first_w, second_w = Vt[:r], Uf[:, :r] * S[:r]
    bias = layer.params.get("bias")
    if isinstance(layer, Linear):
        first, second = Linear(layer.in_features, r, bias=False), Linear(r, layer.out_features)
        first.params["weight"][...] = first_w
        second.params["weight"][...] = second_w
    else:
        first = Conv2d(layer.in_channels, r, layer.kernel_size, layer.stride, layer.padding,
                       layer.dilation, bias=False)
        second = Conv2d(r, layer.out_channels, 1)
        first.params["weight"][...] = first_w.reshape(first.params["weight"].shape)
        second.params["weight"][...] = second_w.reshape(second.params["weight"].shape)
    if bias is not None:
        second.params["bias"][...] = bias
    return Sequential([("0", first), ("1", second)])


class LowRank(Method):
    """Truncated SVD of each layer's lowered weight, optionally refit to the outputs."""

    name = "lowrank"
    label = "rank"
    Settings = LowRankSettings
    per_layer = ("rank",)

    def resolve(self, path, layer, values, settings):
        if isinstance(layer, Conv2d) and layer.groups != 1:
            raise ConfigError(f"convert: {path} is a grouped convolution (groups={layer.groups}); "
                              f"the lowrank method converts groups=1 only: keep its switch exact")
        W = _matrix(layer)
        full = min(W.shape)
        spec = values["rank"]
        if spec == "auto":
            s2 = np.linalg.svd(W.astype(np.float64), compute_uv=False) ** 2
            keep = np.cumsum(s2) / max(s2.sum(), 1e-300)
            r = int(np.searchsorted(keep, settings.energy - 1e-12) + 1)
        elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) and spec >= 1:
            r = int(spec)
        else:
            raise ConfigError(f"convert: rank for {path} must be an int >= 1 or 'auto', got {spec!r}")
        return {"r": min(r, full), "full_rank": full}

    def fit(self, data, ls, settings, rng):
        new = factor_layer(data.layer, ls["r"])
        return new, {"r": ls["r"], "full_rank": ls["full_rank"], "refine": settings.refine}

    def refine(self, new, data, ls, settings, rng):
        """Least squares of the second factor and bias on the first factor's outputs."""
        if not settings.refine:
            return None
        first, second = new.children["0"], new.children["1"]
        z = apply(first, data.xa, data.layout)                   # the first factor's output, once
        Z = to_rows(z, data.layout).astype(np.float64)
        Y = data.target_rows(True)[0].astype(np.float64)   # already net of a residual shortcut
        Z1 = np.hstack([Z, np.ones((len(Z), 1))])
        G = Z1.T @ Z1
        G[np.diag_indices(len(G) - 1)] += RIDGE * np.trace(G) / len(G)
        coef = np.linalg.solve(G, Z1.T @ Y)                      # (r + 1, C_out)
        second.params["weight"][...] = coef[:-1].T.reshape(second.params["weight"].shape)
        second.params["bias"][...] = coef[-1]
        return apply(second, z, data.layout)

    def skeleton(self, layer, ls, settings):
        return factor_layer(layer, ls["r"])

    def describe(self, record):
        return f"r={record['r']}/{record['full_rank']}"

    def network_meta(self, settings):
        return {"refine": settings.refine, "energy": settings.energy}

    def layer_meta(self, record):
        return [record["r"], record["full_rank"]]


register_method(LowRank())
