"""The binary and ternary methods: each converted layer's weights to bits, optionally its inputs too.

``method="binary"`` (XNOR-Net's closed form: ``sign(W)``, ``alpha = mean |W|``
per output filter) and ``method="ternary"`` (TWN's: ``Delta = 0.7 * mean |W|``,
``alpha`` = the mean ``|W|`` kept) turn each converted ``Conv2d`` (groups 1) or
``Linear`` into a :class:`~tabconv_np.binary.BinaryConv2d` or
:class:`~tabconv_np.binary.BinaryLinear`, from the weights alone.

Settings:

* ``activations`` (per layer): ``"float"`` (weights only) or ``"binary"``
  (the input binarised too, XNOR + popcount; its one per-tensor scale
  ``beta`` = mean |x| of the layer's calibration inputs, so training images
  are needed);
* ``ends``: ``"exact"`` (the default, as the BNN literature does: the
  network's first and last weight layers stay float) or ``"binary"``
  (converted too; :meth:`Binary.for_network` finds them);
* ``refine``: None or ``"none"`` (the default: the closed forms above, nothing
  fitted) or ``"exact"``: each output channel's scale and bias refitted by
  least squares to the exact network's output on the calibration rows (two
  numbers per channel: the signs stay those of the weights).

Post-training binarisation of a network trained in float loses most of its
accuracy (README, "Binary and ternary networks": measured figures); the
literature trains with the signs in the forward pass (a straight-through
estimator; ``bench/binary_finetune.py``).
"""
from dataclasses import dataclass, replace

import numpy as np

from ..binary import ACTIVATIONS, BinaryConv2d, BinaryLinear
from ..errors import ConfigError
from ..layers import Conv2d, Linear
from ..geometry import to_rows
from .calibration import BATCH
from .method import Method, register_method
from .switches import find_switches

#: ``ends`` values and ``refine`` values.
ENDS = ("exact", "binary")
REFINES = (None, "none", "exact")


@dataclass(frozen=True)
class BinarySettings:
    """Settings of the binary and ternary methods.

    Attributes
    ----------
    activations : {"float", "binary"}, list or dict
        Per layer: keep float inputs, or binarise them (a fully binary layer).
    ends : {"exact", "binary"}
        Keep the network's first and last weight layers exact, or convert them too.
    refine : {None, "none", "exact"}
        Refit each output channel's scale and bias to the exact outputs, or not.
    end_layers : tuple of str
        The first and last weight layers' paths; filled in by ``convert``.
    """

    activations: object = "float"
    ends: str = "exact"
    refine: object = None
    end_layers: tuple = ()

    def __post_init__(self):
        if self.ends not in ENDS:
            raise ConfigError(f"convert: ends must be one of {list(ENDS)}, got {self.ends!r}")
        if self.refine not in REFINES:
            raise ConfigError(f"convert: refine must be 'none' or 'exact' (binary, ternary), "
                              f"got {self.refine!r}")


def binary_layer(layer, weights, activations, input_scale=1.0):
    """The binary (ternary) version of ``layer`` (Conv2d of groups 1, or Linear)."""
    if isinstance(layer, Linear):
        return BinaryLinear.from_linear(layer, weights, activations, input_scale)
    return BinaryConv2d.from_conv(layer, weights, activations, input_scale)


def input_scale(x):
    """``beta`` = mean |x| of the finite calibration inputs (1 when there are none or all are 0)."""
    a = np.abs(np.asarray(x, np.float32))
    a = a[np.isfinite(a)]
    beta = float(a.mean(dtype=np.float64)) if a.size else 0.0
    return np.float32(beta if beta > 0 else 1.0)


class Binary(Method):
    """Binary weights per output filter (XNOR-Net), float or binary inputs."""

    name = "binary"
    weights = "binary"
    label = "weights/inputs"
    Settings = BinarySettings
    per_layer = ("activations",)

    def for_network(self, settings, body):
        leaves = [leaf for s in find_switches(body) for leaf in s.leaves]
        return replace(settings, end_layers=(leaves[0], leaves[-1]) if leaves else ())

    def resolve(self, path, layer, values, settings):
        if settings.ends == "exact" and path in settings.end_layers:
            which = "first" if path == settings.end_layers[0] else "last"
            return {"keep": f"the network's {which} weight layer (ends='exact')"}
        if isinstance(layer, Conv2d) and layer.groups != 1:
            raise ConfigError(f"convert: {path} is a grouped convolution (groups={layer.groups}); "
                              f"the {self.name} method converts groups=1 only: keep its switch exact")
        act = values["activations"]
        if act not in ACTIVATIONS:
            raise ConfigError(f"convert: activations for {path} must be one of {list(ACTIVATIONS)} "
                              f"({self.name} method), got {act!r}")
        return {"activations": act}

    def fit(self, data, ls, settings, rng):
        if "keep" in ls:
            return data.layer, {"kept": ls["keep"]}
        beta = input_scale(data.x) if ls["activations"] == "binary" else np.float32(1)
        new = binary_layer(data.layer, self.weights, ls["activations"], beta)
        return new, {"weights": self.weights, "activations": ls["activations"], "input_scale": float(beta),
                     "refine": settings.refine}

    def refine(self, new, data, ls, settings, rng):
        """Least squares of each output channel's scale and bias: ``y_m = s_m * u_m + c_m``, ``u_m``
        the layer's unscaled output (the +-1 products), on the calibration inputs."""
        if "keep" in ls or settings.refine in (None, "none"):
            return None
        p = new.params
        alpha, beta = p["weight_scale"].copy(), float(p["input_scale"][0])
        p["weight_scale"][...], p["bias"][...] = 1.0 / beta, 0.0             # unscaled: u = dot
        n, su, sy, suu, suy = 0, 0.0, 0.0, 0.0, 0.0
        for i in range(0, len(data.x), BATCH):
            part = slice(i, i + BATCH)
            u = to_rows(new.forward(data.x[part], data.layout), data.layout).astype(np.float64)
            y = data.ye[part] if data.shortcut is None else \
                data.ye[part] + data.shortcut[1][part] - data.shortcut[0][part]
            y = to_rows(y, data.layout).astype(np.float64)
            n, su, sy = n + len(u), su + u.sum(axis=0), sy + y.sum(axis=0)
            suu, suy = suu + (u * u).sum(axis=0), suy + (u * y).sum(axis=0)
        mu, my = su / n, sy / n
        var, cov = suu / n - mu * mu, suy / n - mu * my
        s = np.where(var > 1e-12 * np.maximum(suu / n, 1e-30), cov / np.where(var > 0, var, 1), alpha * beta)
        p["weight_scale"][...] = s / beta
        p["bias"][...] = my - s * mu
        return None

    def transfer(self, new_layer, exact_layer):
        if not isinstance(new_layer, (BinaryConv2d, BinaryLinear)):          # kept exact
            return exact_layer
        return binary_layer(exact_layer, self.weights, new_layer.activations, new_layer.params["input_scale"][0])

    def skeleton(self, layer, ls, settings):
        if "keep" in ls:
            return layer
        if isinstance(layer, Linear):
            return BinaryLinear(layer.in_features, layer.out_features, self.weights, ls["activations"])
        return BinaryConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                            layer.padding, layer.dilation, self.weights, ls["activations"])

    def describe(self, record):
        return "exact" if "kept" in record else f"{record['weights']}/{record['activations']}"

    def network_meta(self, settings):
        return {"ends": settings.ends, "refine": settings.refine, "end_layers": list(settings.end_layers)}

    def layer_meta(self, record):
        return {} if "kept" in record else {k: record[k] for k in ("weights", "activations", "input_scale")}


class Ternary(Binary):
    """Ternary weights per output filter (TWN's threshold), float or binary inputs."""

    name = "ternary"
    weights = "ternary"


register_method(Binary())
register_method(Ternary())
