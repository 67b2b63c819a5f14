"""The pruning method: each converted convolution keeps its largest weights, stored sparse.

Unstructured magnitude pruning, per layer: with ``pruned = p`` a layer's
``ceil((1 - p) * n)`` weights of largest magnitude are kept (ties broken by
position, so the result is deterministic) and the rest set to zero; with
``scope="global"`` one threshold for all the converted layers together: the
``ceil((1 - p) * N)`` weights of largest magnitude among their ``N`` are kept
(ties broken by layer order, then position), so layers of small weights lose
more of them.  The layer
becomes a :class:`~tabconv_np.sparse.SparseConv2d` holding only the kept ones,
which it alone multiplies.  ``pruned = 0`` keeps every nonzero weight: the
same outputs up to the order of the float32 sums.  Fits from the weights
alone; no refit (the seed's fine-tuning after pruning needs training, which
this package does not do).  Linear layers stay exact; grouped convolutions
are refused.
"""
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..validate import as_choice, in_unit_interval
from ..sparse import SparseConv2d
from .method import Method, convolution_or_keep, register_method


@dataclass(frozen=True)
class PruneSettings:
    """Settings of the pruning method.

    Attributes
    ----------
    pruned : float in [0, 1), list or dict
        The fraction of each layer's weights set to zero (per-layer forms as in
        :mod:`tabconv_np.conversion.settings`).
    scope : {"layer", "global"}
        ``"global"``: ``pruned`` (one value) is the fraction of all the converted
        layers' weights, by one magnitude threshold.
    """

    pruned: object = 0.5
    scope: str = "layer"

    def __post_init__(self):
        as_choice(self.scope, "convert: scope", ("layer", "global"))


def magnitude_mask(W, pruned, keep=None):
    """Boolean mask of the ``keep`` (default ``ceil((1 - pruned) * W.size)``) entries of largest ``|W|``."""
    keep = int(np.ceil((1 - pruned) * W.size)) if keep is None else keep
    order = np.argsort(-np.abs(W).ravel(), kind="stable")
    mask = np.zeros(W.size, bool)
    mask[order[:keep]] = True
    return mask.reshape(W.shape)


class Prune(Method):
    """Magnitude pruning to CSR convolutions."""

    name = "prune"
    label = "kept weights"
    Settings = PruneSettings
    per_layer = ("pruned",)

    def resolve(self, path, layer, values, settings):
        keep = convolution_or_keep(self.name, path, layer)
        if keep:
            return keep
        p = values["pruned"]
        if not in_unit_interval(p, "[0, 1)"):
            raise ConfigError(f"convert: pruned for {path} must be a fraction in [0, 1), got {p!r}")
        return {"pruned": float(p)}

    def resolve_network(self, resolved, network, settings):
        """With ``scope="global"``: each layer's count of kept weights under one threshold."""
        modules = dict(network.body.modules())
        paths = [q for q, ls in resolved.items() if "keep" not in ls]
        if settings.scope == "layer" or not paths:
            return resolved
        fractions = {resolved[q]["pruned"] for q in paths}
        if len(fractions) > 1:
            raise ConfigError(f"convert: scope='global' takes one pruned fraction, got {sorted(fractions)}")
        mags = np.concatenate([np.abs(modules[q].params["weight"]).ravel() for q in paths])
        kept = np.zeros(mags.size, bool)
        kept[np.argsort(-mags, kind="stable")[:int(np.ceil((1 - fractions.pop()) * mags.size))]] = True
        bounds = np.cumsum([0] + [modules[q].params["weight"].size for q in paths])
        return {**resolved, **{q: dict(resolved[q], keep_count=int(kept[a:b].sum()))
                               for q, a, b in zip(paths, bounds[:-1], bounds[1:])}}

    def _sparse(self, layer, ls):
        W = layer.params["weight"]
        return SparseConv2d.from_dense(layer, W * magnitude_mask(W, ls["pruned"], ls.get("keep_count")))

    def fit(self, data, ls, settings, rng):
        if "keep" in ls:
            return data.layer, {"kept": ls["keep"]}
        new = self._sparse(data.layer, ls)
        return new, {"pruned": ls["pruned"], "nnz": new.nnz, "weights": data.layer.params["weight"].size}

    def skeleton(self, layer, ls, settings):
        return layer if "keep" in ls else self._sparse(layer, ls)

    def describe(self, record):
        return "exact" if "kept" in record else f"{record['nnz']}/{record['weights']}"

    def layer_meta(self, record):
        return {} if "kept" in record else {"nnz": record["nnz"], "weights": record["weights"]}


register_method(Prune())
