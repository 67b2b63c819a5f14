"""The TabConv method: product-quantization prototypes and lookup tables per layer.

For each converted layer: learn ``C`` subspaces of ``K`` prototypes by
k-means on the layer's input rows (:class:`~tabconv_np.pq.ProductQuantizer`),
build the table from the (BN-folded) weights
(:class:`~tabconv_np.tables.TableConv2d`, :class:`~tabconv_np.tables.TableLinear`),
and optionally (beyond the authors' method) refit the table entries by
ridge-regularised least squares (:func:`~tabconv_np.tables.fit_tables`) so
that the layer reproduces the exact network's output at that point
(``refine="exact"``, correcting the error of the tables before it; the fit
ignores errors a following ReLU would clip, and a residual branch's last conv
also absorbs the error of the shortcut it is added to) or the exact layer on
the same input (``refine="local"``).
"""
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..layers import Linear
from ..pq import INITS, ProductQuantizer
from ..tables import TableConv2d, TableLinear, fit_tables
from ..validate import as_choice, as_int, as_n_prototypes
from .calibration import BATCH, rows_to_output
from .method import Method, register_method
from .settings import columns_spec

@dataclass(frozen=True)
class TabConvSettings:
    """Settings of the TabConv method.

    Attributes
    ----------
    n_codebooks : int, str, list or dict
        ``C`` per layer: an int, or ``"D/<ds>"`` for ``ceil(D/ds)`` subspaces
        of about ``ds`` columns; per-layer forms as in
        :mod:`tabconv_np.conversion.settings`.
    n_prototypes : int, list or dict
        ``K`` per layer (1..16384), same forms.  Capped, with a note, when a
        layer has fewer distinct calibration rows.
    iters : int
        Lloyd iterations per subspace.
    init : {"auto", "k-means++", "random", "product"}
        k-means seeding (see :class:`~tabconv_np.pq.ProductQuantizer`).
    refine : {None, "exact", "local"}
        Table refinement (see the module docstring); None: the authors' plain PQ tables.
    refine_ridge : float
        Shrinkage toward the prototype table, in rows.
    refine_sweeps : int
        Coordinate-descent sweeps.
    """

    n_codebooks: object = 8
    n_prototypes: object = 256
    iters: int = 16
    init: str = "auto"
    refine: object = None
    refine_ridge: float = 1.0
    refine_sweeps: int = 3

    def __post_init__(self):
        as_choice(self.refine, "convert: refine", (None, "exact", "local"))
        as_choice(self.init, "convert: init", INITS)
        as_int(self.iters, "convert: iters", 0)
        as_int(self.refine_sweeps, "convert: refine_sweeps", 0)


def table_codes(layer, x, layout, batch=BATCH):
    """Codes ``(rows, C)`` of the input rows of table ``layer`` on ``x``, in chunks."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        rows = layer.lower(xb, layout)[0] if isinstance(layer, TableConv2d) else xb
        out.append(layer.encode(rows))
    return np.concatenate(out)


class TabConv(Method):
    """Product quantization + lookup tables (arXiv 2404.05872), with optional table refinement."""

    name = "tabconv"
    label = "C,K"
    Settings = TabConvSettings
    per_layer = ("n_codebooks", "n_prototypes")
    aliases = {"codebooks": "n_codebooks", "prototypes": "n_prototypes"}

    def resolve(self, path, layer, values, settings):
        if isinstance(layer, Linear):
            D = layer.in_features
        elif layer.groups != 1:
            raise ConfigError(f"convert: {path} is a grouped convolution (groups={layer.groups}); "
                              f"the table method converts groups=1 only: keep its switch exact")
        else:
            D = layer.geometry.D
        C = columns_spec(values["n_codebooks"], D, f"codebooks for {path}")
        K = as_n_prototypes(values["n_prototypes"], f"prototypes for {path}")
        return {"D": D, "C": C, "K": K}

    @staticmethod
    def _make(exact_layer, prototypes):
        if isinstance(exact_layer, Linear):
            return TableLinear.from_linear(exact_layer, prototypes)
        return TableConv2d.from_conv(exact_layer, prototypes)

    def fit(self, data, ls, settings, rng):
        rows, idx = data.sample_rows(rng)
        pq = ProductQuantizer(ls["C"], ls["K"], iters=settings.iters, init=settings.init,
                              seed=int(rng.integers(2**31)), name=data.path)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pq.fit(rows)
        data.notes += [str(w.message) for w in caught]
        n = data.n_rows()
        if idx is not None:
            data.notes.append(f"{data.path}: k-means on {len(idx):,} of {n:,} calibration rows "
                              f"(seeded subsample, max_rows={data.max_rows:,})")
        del rows
        rec = {"D": ls["D"], "C": pq.C, "K": pq.K, "K_requested": ls["K"], "Ds": pq.Ds, "rows": int(n),
               "rows_used": int(len(idx) if idx is not None else n), "calibrate": data.calibrate,
               "refine": settings.refine}
        return self._make(data.layer, pq.prototypes), rec

    def transfer(self, new_layer, exact_layer):
        return self._make(exact_layer, new_layer.params["prototypes"])

    def refine(self, layer, data, ls, settings, rng):
        if not settings.refine:
            return None
        codes = table_codes(layer, data.xa, data.layout)
        sel, Y, shift = data.refine_rows(layer.params.get("bias"), rng, settings.refine == "exact")
        layer.params["table"][...] = fit_tables(codes[sel], Y, layer.params["table"],
                                                settings.refine_ridge, settings.refine_sweeps,
                                                relu=data.relu, shift=shift)
        return rows_to_output(layer.lookup_trusted(codes), data.ye, data.layout)

    def skeleton(self, layer, ls, settings):
        if isinstance(layer, Linear):
            return TableLinear(layer.in_features, layer.out_features, ls["C"], ls["K"], "bias" in layer.params)
        return TableConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                           layer.padding, layer.dilation, ls["C"], ls["K"], "bias" in layer.params)

    def describe(self, record):
        return f"{record['C']},{record['K']}"

    def network_meta(self, settings):
        return {"refine": settings.refine}

    def layer_meta(self, record):
        return [record["C"], record["K"]]


register_method(TabConv())
