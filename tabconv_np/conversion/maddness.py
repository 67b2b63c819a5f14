"""The MADDNESS method: hash-tree encoding, output-targeted 8-bit tables.

For each converted layer: learn one depth-4 tree per codebook on the layer's
input rows (:func:`~tabconv_np.hashtree.fit_trees`), build the table from the
leaves' means and the (BN-folded) weights, then (``refine="exact"``, the
default) refit the table entries by ridge-regularised least squares on the
calibration codes so that the layer reproduces the exact network's output at
that point (:func:`~tabconv_np.tables.fit_tables`: MADDNESS's prototype
optimisation, layer by layer on what the converted layers before it
produce), and quantise the table to 8 bits
(:class:`~tabconv_np.tree_tables.TreeConv2d`, :class:`~tabconv_np.tree_tables.TreeLinear`).

Codebooks are aligned to the kernel by default (``n_codebooks="auto"``): one
per input channel's ``kh x kw`` window for a convolution with a window, one
per 4 inputs for a 1x1 convolution or a linear layer (LUT-NN's choice).
"""
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..hashtree import fit_trees
from ..layers import Linear
from ..tables import fit_tables
from ..tree_tables import TreeConv2d, TreeLinear
from ..validate import as_choice, as_int
from .calibration import BATCH, apply
from .method import Method, register_method
from .settings import columns_spec, empty_subspaces


@dataclass(frozen=True)
class MaddnessSettings:
    """Settings of the MADDNESS method.

    Attributes
    ----------
    n_codebooks : "auto", int, "D/<ds>", list or dict
        ``C`` per layer (per-layer forms as in :mod:`tabconv_np.conversion.settings`);
        "auto": one codebook per input channel's window (``ds = kh*kw``), or per
        4 inputs when the window is 1x1 or the layer is linear.
    candidates : int
        Columns tried at each tree level.
    refine : {"exact", "local", None}
        Fit the tables to the exact network's output here ("exact"), to the
        exact layer on the same input ("local"), or keep the leaves' means (None).
    refine_ridge : float
        Shrinkage toward the leaves' means, in rows: an entry reached by ``n``
        calibration rows moves ``n / (n + refine_ridge)`` of the way to its
        least-squares value.  30, chosen among 1, 30 and 300 on a validation
        split of Fashion-MNIST training images (``bench/tune_fast.py``,
        docs/tune_fast.md): with few rows per entry (the last stage sees one row
        per image) a small ridge fits the calibration images by heart.
    refine_sweeps : int
    """

    n_codebooks: object = "auto"
    candidates: int = 4
    refine: object = "exact"
    refine_ridge: float = 30.0
    refine_sweeps: int = 3

    def __post_init__(self):
        as_choice(self.refine, "convert: refine", (None, "exact", "local"))
        as_int(self.candidates, "convert: candidates", 1)
        as_int(self.refine_sweeps, "convert: refine_sweeps", 0)


class Maddness(Method):
    """Hash-tree encoding + 8-bit output-targeted tables (Blalock & Guttag, ICML 2021), per layer."""

    name = "maddness"
    label = "codebooks"
    Settings = MaddnessSettings
    per_layer = ("n_codebooks",)
    aliases = {"codebooks": "n_codebooks"}

    def resolve(self, path, layer, values, settings):
        if isinstance(layer, Linear):
            D, window = layer.in_features, 1
        elif layer.groups != 1:
            raise ConfigError(f"convert: {path} is a grouped convolution (groups={layer.groups}); "
                              f"the maddness method converts groups=1 only: keep its switch exact")
        else:
            D, window = layer.geometry.D, layer.kernel_size[0] * layer.kernel_size[1]
        spec = values["n_codebooks"]
        if spec == "auto":
            spec = f"D/{window if window > 1 else 4}"
        C = columns_spec(spec, D, f"codebooks for {path}")
        if empty_subspaces(D, C):
            raise ConfigError(f"convert: codebooks for {path}: {C} subspaces of D = {D} columns leave "
                              f"{empty_subspaces(D, C)} of them empty, which a hash tree cannot split; "
                              f"use {C - empty_subspaces(D, C)} or 'D/<ds>'")
        return {"D": D, "C": C}

    def fit(self, data, ls, settings, rng):
        rows, idx = data.sample_rows(rng)
        trees = fit_trees(rows, ls["C"], settings.candidates)
        n = data.n_rows()
        if idx is not None:
            data.notes.append(f"{data.path}: trees learned on {len(idx):,} of {n:,} calibration rows "
                              f"(seeded subsample, max_rows={data.max_rows:,})")
        del rows
        make = TreeLinear.from_linear if isinstance(data.layer, Linear) else TreeConv2d.from_conv
        layer = make(data.layer, trees)
        rec = {"D": ls["D"], "C": trees.C, "Ds": layer.Ds, "rows": int(n),
               "rows_used": int(len(idx) if idx is not None else n), "calibrate": data.calibrate,
               "refine": settings.refine}
        return layer, rec

    def refine(self, layer, data, ls, settings, rng):
        if not settings.refine:
            return None
        x = data.xa
        codes = np.concatenate([layer.encode(x[i:i + BATCH], data.layout) for i in range(0, len(x), BATCH)])
        sel, Y, shift = data.refine_rows(layer._bias0, rng, settings.refine == "exact")
        T = fit_tables(codes[sel], Y, layer.float_table, settings.refine_ridge,
                       settings.refine_sweeps, relu=data.relu, shift=shift)
        layer.requantize(T)
        return apply(layer, x, data.layout)

    def skeleton(self, layer, ls, settings):
        if isinstance(layer, Linear):
            return TreeLinear(layer.in_features, layer.out_features, ls["C"])
        return TreeConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, layer.dilation, ls["C"])

    def describe(self, record):
        return f"C={record['C']}"

    def network_meta(self, settings):
        return {"refine": settings.refine}

    def layer_meta(self, record):
        return [record["C"], 16]


register_method(Maddness())
