"""The low-rank method: each converted layer becomes two or three thinner layers.

Three forms (``form``), each a truncated SVD of some matricisation of the
weight ``W`` (C_out, C, kh, kw), exact at full rank up to rounding:

``"svd"`` (the default): the lowered weight ``W`` (C_out, C*kh*kw) is
``U S V^T`` truncated to ``r`` singular values::

    conv(x, W) ~= conv1x1( conv(x, V_r^T reshaped to (r, C, kh, kw)), U_r S_r ) + bias

a ``kh x kw`` convolution to ``r`` channels (same stride, padding, dilation)
then a 1x1 convolution to ``C_out``; a linear layer becomes two linear layers
through ``r`` features.  MACs per output position: ``C*kh*kw*C_out`` become
``r*(C*kh*kw + C_out)``.

``"spatial"`` (Jaderberg et al.'s separation): ``W`` as the (C*kh, C_out*kw)
matrix ``W[(c, i), (o, j)]`` is truncated to rank ``r``: a ``kh x 1``
convolution from ``C`` to ``r`` channels (the vertical stride and padding)
then a ``1 x kw`` convolution to ``C_out`` (the horizontal ones).  MACs per
output: ``r*(C*kh*sw_ratio + C_out*kw)``, about ``r*(C*kh + C_out*kw)``.

``"tucker2"`` (Tucker-2 over the channel modes, by the higher-order SVD):
``W ~= G x_1 U_out x_2 U_in`` with ``U_out`` (C_out, r_out) and ``U_in``
(C, r_in) the leading left singular vectors of the mode unfoldings and the
core ``G = W x_1 U_out^T x_2 U_in^T`` (r_out, r_in, kh, kw): a 1x1
convolution ``C -> r_in``, the ``kh x kw`` core ``r_in -> r_out``, and a 1x1
convolution ``r_out -> C_out``.  ``rank`` gives both ``r_in`` and ``r_out``
(each clipped to its mode's size).

Linear layers and 1x1 convolutions take the ``"svd"`` form whatever ``form`` says
(spatial separation and Tucker-2 have nothing to separate there).

``rank`` per layer: an int (clipped to the full rank, where the
factorisation is exact up to rounding), or ``"auto"``: the smallest ``r``
keeping ``energy`` of the squared singular values (of each unfolding, for
Tucker-2).  ``refine="exact"`` (the default) then refits the last factor and
the bias by least squares on the calibration rows so that the factors
reproduce the exact network's output at that point (matrix regression on the
outputs, not the weights: the literature's "reconstruct to outputs");
``refine=None`` keeps the plain truncated decomposition.

``macs=F`` (a fraction in (0, 1)) chooses the ranks for a MAC budget instead:
the converted layers together keep at most ``F`` of their exact MACs.  Each
singular value ``j`` of a layer is worth its share of that layer's squared
singular values, ``s_j**2 / sum(s**2)``, and costs the MACs one more rank
adds to the layer's factors; the values are taken best worth per MAC first
(within a layer that is largest first) while the budget allows, each layer
keeping at least rank 1.  The ``svd`` and ``spatial`` forms (one rank per
layer).
"""
from dataclasses import dataclass

import numpy as np

from ..blocks import Sequential
from ..errors import ConfigError
from ..geometry import to_rows
from ..layers import Conv2d, Linear
from ..ops import count_ops
from ..validate import as_choice, in_unit_interval
from .calibration import apply
from .method import Method, register_method

#: Ridge (relative to the mean squared activation) of the output refit.
RIDGE = 1e-6
#: The decompositions (module docstring).
FORMS = ("svd", "spatial", "tucker2")


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
        Refit the last factor and bias to the exact network's output here, or not.
    form : {"svd", "spatial", "tucker2"}
        The decomposition (module docstring).
    macs : float in (0, 1) or None
        A MAC budget: the ranks chosen so that the converted layers keep at most this
        fraction of their MACs (module docstring); ``rank`` is then not used.
    """

    rank: object = "auto"
    energy: float = 0.95
    refine: object = "exact"
    form: str = "svd"
    macs: object = None

    def __post_init__(self):
        as_choice(self.refine, "convert: refine", (None, "exact"))
        as_choice(self.form, "convert: form", FORMS)
        if not in_unit_interval(self.energy, "(0, 1]"):
            raise ConfigError(f"convert: energy must be in (0, 1], got {self.energy!r}")
        if self.macs is not None:
            if not in_unit_interval(self.macs, "(0, 1)"):
                raise ConfigError(f"convert: macs must be a fraction in (0, 1), got {self.macs!r}")
            if self.form == "tucker2":
                raise ConfigError("convert: macs (a MAC budget) takes the svd or spatial form, not tucker2")


def form_of(layer, form):
    """The form a layer gets: ``form``, or "svd" for linear layers and 1x1 convolutions."""
    return form if isinstance(layer, Conv2d) and layer.kernel_size != (1, 1) else "svd"


def unfoldings(layer, form):
    """The matrices whose truncated SVDs the form takes (float64): one, or two for Tucker-2."""
    W = layer.params["weight"].astype(np.float64)
    if isinstance(layer, Linear) or form == "svd":
        return [W.reshape(len(W), -1)]
    C_out, C, kh, kw = W.shape
    if form == "spatial":                                     # W[(c, i), (o, j)]
        return [W.transpose(1, 2, 0, 3).reshape(C * kh, C_out * kw)]
    return [W.reshape(C_out, -1), W.transpose(1, 0, 2, 3).reshape(C, -1)]   # modes 1 and 2


def _conv(C, C_out, weight, kernel, stride=1, padding=0, dilation=1):
    layer = Conv2d(C, C_out, kernel, stride, padding, dilation, bias=False)
    layer.params["weight"][...] = weight.reshape(layer.params["weight"].shape)
    return layer


def factor_layer(layer, r, form="svd"):
    """The layers replacing ``layer`` (Conv2d, groups 1, or Linear) by the rank-``r`` truncation of
    ``form`` (a :class:`~tabconv_np.blocks.Sequential` of two, or three for Tucker-2); ``r`` is
    an int, or ``(r_out, r_in)`` for Tucker-2."""
    form = form_of(layer, form)
    bias = layer.params.get("bias")
    if form == "tucker2":
        (r_out, r_in), W = r, layer.params["weight"].astype(np.float64)
        U_out, U_in = (np.linalg.svd(M, full_matrices=False)[0][:, :k]
                       for M, k in zip(unfoldings(layer, form), (r_out, r_in)))
        core = np.einsum("ocij,or,cs->rsij", W, U_out, U_in, optimize=True)
        parts = [_conv(layer.in_channels, r_in, U_in.T, 1),
                 _conv(r_in, r_out, core, layer.kernel_size, layer.stride, layer.padding, layer.dilation),
                 Conv2d(r_out, layer.out_channels, 1)]
        parts[2].params["weight"][...] = U_out.reshape(parts[2].params["weight"].shape)
    else:
        Uf, S, Vt = np.linalg.svd(unfoldings(layer, form)[0], full_matrices=False)
        a, b = Vt[:r], Uf[:, :r] * S[:r]
        if isinstance(layer, Linear):
            parts = [Linear(layer.in_features, r, bias=False), Linear(r, layer.out_features)]
            parts[0].params["weight"][...] = a
            parts[1].params["weight"][...] = b
        elif form == "svd":
            parts = [_conv(layer.in_channels, r, a, layer.kernel_size, layer.stride, layer.padding,
                           layer.dilation), Conv2d(r, layer.out_channels, 1)]
            parts[1].params["weight"][...] = b.reshape(parts[1].params["weight"].shape)
        else:                      # spatial: b (C*kh, r) -> kh x 1; a (r, C_out*kw) -> 1 x kw
            (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
            pt, pb, pl, pr = layer.geometry.padding
            C, C_out = layer.in_channels, layer.out_channels
            parts = [_conv(C, r, b.T.reshape(r, C, kh, 1), (kh, 1), (sh, 1), (pt, pb, 0, 0), (dh, 1)),
                     Conv2d(r, C_out, (1, kw), (1, sw), (0, 0, pl, pr), (1, dw))]
            parts[1].params["weight"][...] = a.reshape(r, C_out, kw).transpose(1, 0, 2)[:, :, None, :]
    if bias is not None:
        parts[-1].params["bias"][...] = bias
    return Sequential([(str(i), p) for i, p in enumerate(parts)])


def _rank(matrix, spec, energy, path):
    """``spec`` (an int >= 1 or "auto") as a rank of ``matrix``, clipped to its full rank."""
    full = min(matrix.shape)
    if spec == "auto":
        s2 = np.linalg.svd(matrix, compute_uv=False) ** 2
        keep = np.cumsum(s2) / max(s2.sum(), 1e-300)
        return int(np.searchsorted(keep, energy - 1e-12) + 1)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) and spec >= 1:
        return min(int(spec), full)
    raise ConfigError(f"convert: rank for {path} must be an int >= 1 or 'auto', got {spec!r}")


def _macs(layer, r, form, in_shape):
    """Multiply-adds per image of ``layer`` factored at rank ``r`` (or of ``layer`` when r is None)."""
    m = layer if r is None else factor_layer(layer, r, form)
    return count_ops(m, tuple(in_shape)).total["macs"]


def budget_ranks(layers, fraction):
    """Ranks for a MAC budget (module docstring): ``{path: r}``.

    layers : {path: (layer, form, in_shape)}, the converted layers
    fraction : the share of their exact MACs the factors may cost
    """
    worth, step, base, ranks = [], {}, 0, {}
    for path, (layer, form, shape) in layers.items():
        s2 = np.linalg.svd(unfoldings(layer, form)[0], compute_uv=False) ** 2
        one, two = _macs(layer, 1, form, shape), _macs(layer, 2, form, shape)
        step[path], ranks[path] = two - one, 1                   # MACs are linear in r
        base += one
        worth += [(s2[j] / max(s2.sum(), 1e-300) / (two - one), path) for j in range(1, len(s2))]
    allowed = fraction * sum(_macs(layer, None, form, shape) for layer, form, shape in layers.values())
    for _, path in sorted(worth, key=lambda wp: -wp[0]):         # stable: ties in layer order
        if base + step[path] <= allowed:
            base += step[path]
            ranks[path] += 1
    return ranks


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
        form = form_of(layer, settings.form)
        mats = unfoldings(layer, form)
        r = tuple(_rank(M, values["rank"], settings.energy, path) for M in mats)
        full = tuple(min(M.shape) for M in mats)
        if form != "tucker2":
            r, full = r[0], full[0]
        return {"r": r, "full_rank": full, "form": form}

    def resolve_network(self, resolved, network, settings):
        """With a MAC budget (``macs``): every layer's rank from :func:`budget_ranks`."""
        if settings.macs is None or not resolved:
            return resolved
        modules = dict(network.body.modules())
        shapes = {r["name"]: r["in_shape"] for r in count_ops(network).rows}
        ranks = budget_ranks({p: (modules[p], ls["form"], shapes[p]) for p, ls in resolved.items()},
                             settings.macs)
        return {p: dict(ls, r=ranks[p]) for p, ls in resolved.items()}

    def fit(self, data, ls, settings, rng):
        new = factor_layer(data.layer, ls["r"], ls["form"])
        return new, {"r": ls["r"], "full_rank": ls["full_rank"], "form": ls["form"], "refine": settings.refine}

    def refine(self, new, data, ls, settings, rng):
        """Least squares of the last factor and bias on the other factors' outputs."""
        if not settings.refine:
            return None
        *head, second = new.children.values()
        z = data.xa
        for layer in head:                                       # the other factors' output, once
            z = apply(layer, z, data.layout)
        Z = (to_rows(z, data.layout) if isinstance(second, Linear) or second.kernel_size == (1, 1)
             else second.geometry.lower(z, data.layout)[0]).astype(np.float64)
        Y = data.target_rows(True)[0].astype(np.float64)   # already net of a residual shortcut
        Z1 = np.hstack([Z, np.ones((len(Z), 1))])
        G = Z1.T @ Z1
        G[np.diag_indices(len(G) - 1)] += RIDGE * np.trace(G) / len(G)
        coef = np.linalg.solve(G, Z1.T @ Y)                      # (r + 1, C_out)
        second.params["weight"][...] = coef[:-1].T.reshape(second.params["weight"].shape)
        second.params["bias"][...] = coef[-1]
        return apply(second, z, data.layout)

    def skeleton(self, layer, ls, settings):
        return factor_layer(layer, ls["r"], ls["form"])

    def describe(self, record):
        r, full = record["r"], record["full_rank"]
        if record["form"] == "tucker2":
            return f"tucker2 r={r[0]}x{r[1]}/{full[0]}x{full[1]}"
        return f"{record['form']} r={r}/{full}"

    def network_meta(self, settings):
        return {"refine": settings.refine, "energy": settings.energy, "form": settings.form, "macs": settings.macs}

    def layer_meta(self, record):
        return [record["form"], record["r"], record["full_rank"]]


register_method(LowRank())
