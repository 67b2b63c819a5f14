"""The method seam of :func:`~tabconv_np.conversion.convert`: what a conversion method implements.

The calibration walk, switches, per-layer settings, priority masking, the
classifier refit and the result are the same for every method; a method
supplies only what is its own:

1. ``resolve(path, layer, values)``: per-layer settings from the values of
   its per-layer fields (:attr:`Method.per_layer`) for that layer, checked
   before any fitting starts (refuse a layer it cannot convert here);
2. ``fit(data, settings, rng)``: the replacement layer and a record of what
   was done, from calibration rows (:class:`~tabconv_np.conversion.calibration.LayerData`)
   or from the weights alone;
3. optionally ``refine(new_layer, data, settings, rng)``: adjust the new
   layer toward the exact network's output and return its output on the
   calibration inputs (or None to have the walk compute it).

and, for the op counter's data-free preview, ``skeleton(layer, settings)``: the
replacement with zero parameters.  A method that changes more than one layer
at a time (channel pruning: two convolutions share the channels it removes)
also implements ``finish(body, ...)``, the network after the walk.  A method registers itself with
:func:`register_method` so that ``convert(..., method="name")`` finds it; an
instance can also be passed directly.
"""
from dataclasses import dataclass

from ..errors import ConfigError

#: Conversion methods by name (filled by :func:`register_method`).
METHODS = {}


def register_method(method):
    """Make ``method`` (a :class:`Method` instance) available as ``convert(..., method=method.name)``."""
    METHODS[method.name] = method
    return method


def get_method(method):
    """A :class:`Method` from an instance or a registered name."""
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise ConfigError(f"convert: unknown method {method!r} (known: {', '.join(sorted(METHODS))})")
    return METHODS[method]


@dataclass(frozen=True)
class NoSettings:
    """Settings of a method that has none."""


class Method:
    """Base class of conversion methods (see the module docstring).

    Attributes
    ----------
    name : str
    Settings : type
        A frozen dataclass of the method's own settings.
    per_layer : tuple of str
        Fields of ``Settings`` that take per-layer values (one value, a list
        per switch, or a dict of paths / switch names / globs).
    aliases : dict
        Older keyword names accepted by ``convert`` for the method's fields.
    label : str
        What :meth:`describe` shows, for the summary's header.
    """

    name = "method"
    label = "setting"
    Settings = NoSettings
    per_layer = ()
    aliases = {}

    def for_network(self, settings, body):
        """The method's settings for converting ``body`` (the BN-folded network body), before any
        ``resolve``; a method whose settings depend on the network (which layers are its first and
        last) fills them in here.  Default: unchanged."""
        return settings

    def resolve(self, path, layer, values, settings):
        """Per-layer settings for ``layer`` at ``path`` (``values``: its per-layer fields)."""
        return dict(values)

    def resolve_network(self, resolved, network, settings):
        """Every layer's resolved settings at once (``resolved``: ``{leaf path: layer settings}``;
        ``network``: the BN-folded exact network), for settings that depend on all the converted
        layers together (global pruning, a MAC budget).  Default: unchanged."""
        return resolved

    def fit(self, data, layer_settings, settings, rng):
        """``(new layer, record dict)`` replacing ``data.layer``."""
        raise NotImplementedError

    def transfer(self, new_layer, exact_layer):
        """The same approximation built on ``exact_layer``'s weights (the classifier before its
        refit), or None when the method cannot."""
        return None

    def finish(self, body, resolved, records, settings):
        """The converted ``body`` after the walk (``resolved``: ``{leaf path: layer settings}``;
        ``records``: the layers' records, None when counting without data); may annotate the
        records.  ``body`` unless the method changes several layers together."""
        return body

    def refine(self, new_layer, data, layer_settings, settings, rng):
        """Adjust ``new_layer`` toward the exact output; return its output on ``data.xa`` or None."""
        return None

    def skeleton(self, layer, layer_settings, settings):
        """The replacement of ``layer`` with zero parameters (for counting without data)."""
        raise NotImplementedError

    def describe(self, record):
        """A short per-layer label for summaries, e.g. ``"C=8,K=256"``."""
        return ""

    def network_meta(self, settings):
        """What the converted network's metadata keeps about the method's settings."""
        return {}

    def layer_meta(self, record):
        """What the converted network's metadata keeps about a layer."""
        return {}


def convolution_or_keep(method, path, layer):
    """For methods that convert convolutions only: None for a ``Conv2d`` of groups 1,
    ``{"keep": reason}`` for a Linear layer (it stays exact), ConfigError for a grouped conv."""
    from ..layers import Conv2d, Linear
    if isinstance(layer, Linear):
        return {"keep": f"a Linear layer ({method} converts convolutions)"}
    if not isinstance(layer, Conv2d) or layer.groups != 1:
        raise ConfigError(f"convert: {path} is a grouped convolution (groups={getattr(layer, 'groups', '?')}); "
                          f"the {method} method converts groups=1 only: keep its switch exact")
    return None
