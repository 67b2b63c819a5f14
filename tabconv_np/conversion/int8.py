"""The int8 method: post-training quantisation of each converted layer to 8-bit weights and inputs.

Each converted layer (BN folded first, by ``convert``) becomes an
:class:`~tabconv_np.int8.Int8Conv2d` or :class:`~tabconv_np.int8.Int8Linear`:
weights symmetric per output channel in [-127, 127], the layer's input
quantised per tensor with a scale (and zero point) calibrated on the
calibration (training) images as they reach that layer, through the layers
converted before it (``calibrate="approx"``, the default) or through the
exact network (``calibrate="exact"``).

The input range ``[lo, hi]`` of a layer comes from one of two rules
(``range_rule``):

* ``"minmax"``: the smallest and largest value seen;
* ``"percentile"``: the ``100 - p`` and ``p`` percentiles (``percentile = p``,
  e.g. 99.99), so that a few outliers do not stretch the grid for every
  other value (they are clamped instead); symmetric mode takes the ``p``
  percentile of ``|x|``.

Per-layer settings (one value, a list per switch, or ``PATTERN=VALUE``
items): ``bits`` (8 only: anything else is refused naming the layer),
``activations`` (``"asymmetric"`` uint8 with a zero point, or
``"symmetric"``), ``range_rule`` and ``percentile``.  ``min_images``: fewer
calibration images than this is refused (a range from a handful of images
misses the activations of the rest).
"""
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..int8 import ACTIVATIONS, Int8Conv2d, Int8Linear, activation_qparams
from ..layers import Conv2d, Linear
from .method import Method, register_method

#: The range rules.
RANGE_RULES = ("minmax", "percentile")
#: Bit widths the method supports.
BITS = (8,)


@dataclass(frozen=True)
class Int8Settings:
    """Settings of the int8 method.

    Attributes
    ----------
    bits : int, list or dict
        Bits per layer; 8 is the only width supported.
    activations : {"asymmetric", "symmetric"}, list or dict
        uint8 inputs with a zero point, or int8 inputs in [-127, 127] with none.
    range_rule : {"minmax", "percentile"}, list or dict
        How each layer's input range is calibrated.
    percentile : float in (50, 100], list or dict
        With ``range_rule="percentile"``: the upper percentile kept (the lower is ``100 - p``).
    min_images : int
        Calibration images needed at least.
    """

    bits: object = 8
    activations: object = "asymmetric"
    range_rule: object = "minmax"
    percentile: object = 99.99
    min_images: int = 32

    def __post_init__(self):
        if not (isinstance(self.min_images, (int, np.integer)) and not isinstance(self.min_images, bool)
                and self.min_images >= 2):
            raise ConfigError(f"convert: min_images must be an int >= 2, got {self.min_images!r}")


def input_range(x, rule, percentile, activations):
    """``(lo, hi)`` of the calibration activations ``x`` under ``rule`` (see the module docstring)."""
    x = np.asarray(x, np.float32).reshape(-1)
    x = x[np.isfinite(x)] if not np.isfinite(x).all() else x
    if not x.size:
        return 0.0, 0.0
    if rule == "minmax":
        return float(x.min()), float(x.max())
    if activations == "symmetric":
        a = float(np.percentile(np.abs(x), percentile))
        return -a, a
    lo, hi = np.percentile(x, [100 - percentile, percentile])
    return float(lo), float(hi)


def int8_layer(layer, scale, zero_point, activations):
    """The int8 version of ``layer`` (Conv2d, groups 1, or Linear) for an input of that scale and zero point."""
    if isinstance(layer, Linear):
        return Int8Linear.from_linear(layer, scale, zero_point, activations)
    return Int8Conv2d.from_conv(layer, scale, zero_point, activations)


class Int8(Method):
    """int8 weights (per output channel) and inputs (per tensor), calibrated on training images."""

    name = "int8"
    label = "input range"
    Settings = Int8Settings
    per_layer = ("bits", "activations", "range_rule", "percentile")

    def resolve(self, path, layer, values, settings):
        if isinstance(layer, Conv2d) and layer.groups != 1:
            raise ConfigError(f"convert: {path} is a grouped convolution (groups={layer.groups}); "
                              f"the int8 method converts groups=1 only: keep its switch exact")
        bits, act, rule, p = (values[k] for k in self.per_layer)
        if isinstance(bits, bool) or bits not in BITS:
            raise ConfigError(f"convert: bits for {path} must be one of {list(BITS)} (the int8 method), "
                              f"got {bits!r}")
        if act not in ACTIVATIONS:
            raise ConfigError(f"convert: activations for {path} must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        if rule not in RANGE_RULES:
            raise ConfigError(f"convert: range_rule for {path} must be one of {list(RANGE_RULES)}, got {rule!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 50 < p <= 100:
            raise ConfigError(f"convert: percentile for {path} must be a number in (50, 100], got {p!r}")
        return {"bits": int(bits), "activations": act, "range_rule": rule, "percentile": float(p)}

    def fit(self, data, ls, settings, rng):
        n = len(data.x)
        if n < settings.min_images:
            raise ConfigError(f"convert: int8 calibration of {data.path} needs at least {settings.min_images} "
                              f"images (min_images), got {n}")
        lo, hi = input_range(data.x, ls["range_rule"], ls["percentile"], ls["activations"])
        scale, z = activation_qparams(lo, hi, ls["activations"])
        new = int8_layer(data.layer, scale, z, ls["activations"])
        return new, {"range": [lo, hi], "scale": float(scale), "zero_point": int(z), **ls}

    def transfer(self, new_layer, exact_layer):
        p = new_layer.params
        return int8_layer(exact_layer, p["input_scale"][0], int(p["input_zero_point"][0]), new_layer.activations)

    def skeleton(self, layer, ls, settings):
        if isinstance(layer, Linear):
            return Int8Linear(layer.in_features, layer.out_features, ls["activations"])
        return Int8Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, ls["activations"])

    def describe(self, record):
        lo, hi = record["range"]
        return f"[{lo:.3g}, {hi:.3g}] z={record['zero_point']}"

    def network_meta(self, settings):
        return {"min_images": settings.min_images}

    def layer_meta(self, record):
        return {k: record[k] for k in ("range", "scale", "zero_point", "activations", "range_rule", "percentile")}


register_method(Int8())
