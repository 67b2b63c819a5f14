"""Conversion settings: the method-independent ones, switch flags, and per-layer resolution.

A per-layer setting is one value for every layer, a list with one value per
switch, or a dict keyed by layer path (``"layer1.0.conv2"``), switch name
(``"layer1.0"``) or a glob pattern over layer paths (``"*.downsample.*"``),
looked up in that order, with ``"*"`` (or ``"default"``) for the rest.
"""
import math
import warnings
from dataclasses import dataclass, fields
from fnmatch import fnmatchcase

from ..errors import ConfigError, SettingWarning
from ..pq import subspace_length
from ..validate import as_choice, as_int


@dataclass(frozen=True)
class ConversionSettings:
    """What every conversion method shares.

    Attributes
    ----------
    switches : None, list of 0/1, str "1,0,..." or dict name -> 0/1
        Which switches are converted (default all).
    mask_rate : float or None
        Priority masking rate ``M`` in percent: keep exact the
        ``floor(M*L/100)`` switches (among those on) with the largest
        similarity drop.
    refit_classifier : bool
        Refit the final Linear by ridge regression of the exact logits on the
        converted network's features (calibration images).
    ridge_alpha : float
        Relative ridge penalty of that refit.
    calibrate : {"approx", "exact"}
        Fit each layer on its input in the converted network so far
        ("approx") or in the exact network ("exact").
    max_rows : int
        At most this many calibration rows per layer are used for fitting
        (seeded subsample).
    recalibrate : bool
        After masking, convert the switches behind the first masked one again
        on the new activations; False keeps the first pass's layers.
    seed : int
        The result is a deterministic function of the inputs and the seed.
    progress : bool or None
        Progress of the layer fitting on stderr (:class:`~tabconv_np.progress.Progress`):
        None, a bar on a terminal and heartbeat lines otherwise; False, silent.
    """

    switches: object = None
    mask_rate: object = None
    refit_classifier: bool = True
    ridge_alpha: float = 1e-3
    calibrate: str = "approx"
    max_rows: int = 50_000
    recalibrate: bool = True
    seed: int = 0
    progress: object = None

    def __post_init__(self):
        as_choice(self.calibrate, "convert: calibrate", ("approx", "exact"))
        as_int(self.max_rows, "convert: max_rows", 2)
        as_int(self.seed, "convert: seed", 0)
        if self.mask_rate is not None:
            try:
                ok = 0 <= float(self.mask_rate) <= 100
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"convert: mask_rate must be in [0, 100] (percent), got {self.mask_rate!r}")


def split_settings(kwargs, method_settings_type, aliases=None):
    """``(ConversionSettings, method settings)`` from ``convert``'s keyword arguments.

    ``aliases`` maps older keyword names to the method's field names.
    """
    aliases = aliases or {}
    common = {f.name for f in fields(ConversionSettings)}
    own = {f.name for f in fields(method_settings_type)}
    a, b = {}, {}
    for k, v in kwargs.items():
        k = aliases.get(k, k)
        if k in common:
            a[k] = v
        elif k in own:
            b[k] = v
        else:
            raise ConfigError(f"convert: unknown setting {k!r}; settings are {sorted(common | own)}")
    return ConversionSettings(**a), method_settings_type(**b)


def switch_flags(value, switches):
    """Per-switch on/off flags from ``None`` (all on), a 0/1 list, a ``"1,0,..."`` string or a
    ``{switch name: 0/1}`` dict."""
    L = len(switches)
    if value is None:
        return [True] * L
    if isinstance(value, str):
        value = [s for s in value.replace(" ", "").split(",") if s]
    if isinstance(value, dict):
        names = {s.name for s in switches}
        bad = [k for k in value if k not in names]
        if bad:
            raise ConfigError(f"switches: unknown switch name(s) {bad}; switches are {sorted(names)}")
        return [bool(int(value.get(s.name, 1))) for s in switches]
    flags = list(value)
    if len(flags) != L:
        raise ConfigError(f"switches: expected {L} values (one per switch: "
                          f"{[s.name for s in switches]}), got {len(flags)}")
    try:
        return [bool(int(f)) for f in flags]
    except (TypeError, ValueError):
        raise ConfigError(f"switches: expected 0/1 values, got {value!r}") from None


def per_layer(value, switches, what, on=None):
    """Resolve a per-layer setting (see the module docstring) to ``{leaf path: value}``.

    A dict that leaves a layer of a converted switch without a value, names
    an unknown layer or switch, or holds a pattern that matches nothing is
    refused.
    """
    leaves = {leaf: s for s in switches for leaf in s.leaves}
    if isinstance(value, dict):
        default = value.get("*", value.get("default"))
        known = set(leaves) | {s.name for s in switches} | {"*", "default"}
        patterns = [k for k in value if k not in known and any(ch in k for ch in "*?[")]
        unknown = [k for k in value if k not in known and k not in patterns]
        unused = [p for p in patterns if not any(fnmatchcase(leaf, p) for leaf in leaves)]
        if unknown or unused:
            raise ConfigError(f"{what}: unknown switch or layer name(s) {unknown + unused}; switches "
                              f"are {[s.name for s in switches]}")
        out = {}
        for leaf, s in leaves.items():
            v = value.get(leaf, value.get(s.name))
            if v is None:
                v = next((value[p] for p in patterns if fnmatchcase(leaf, p)), default)
            if v is None and (on is None or on[s.index]):
                raise ConfigError(f"{what}: no value for layer {leaf} (switch {s.name}); "
                                  f"add it or a '*' default")
            out[leaf] = v
        return out
    if isinstance(value, (list, tuple)):
        if len(value) != len(switches):
            raise ConfigError(f"{what}: a list needs one value per switch ({len(switches)}: "
                              f"{[s.name for s in switches]}), got {len(value)}")
        return {leaf: value[s.index] for leaf, s in leaves.items()}
    return {leaf: value for leaf in leaves}


def empty_subspaces(D, C):
    """How many of ``C`` subspaces of ``ceil(D/C)`` columns lie wholly in the zero padding past ``D``."""
    return C - subspace_length(D, subspace_length(D, C))


def columns_spec(spec, D, what):
    """A count of row subspaces: an int (capped at ``D``), or ``"D/<ds>"`` meaning ``ceil(D/ds)``.

    Warns (:class:`~tabconv_np.errors.SettingWarning`, ``what`` naming the
    layer) when an int is capped at ``D`` or leaves subspaces of padding only.
    """
    if isinstance(spec, str):
        s = spec.replace(" ", "")
        if s.lower().startswith("d/"):
            try:
                ds = int(s[2:])
            except ValueError:
                ds = 0
            if ds >= 1:
                return max(1, min(D, math.ceil(D / ds)))
        raise ConfigError(f"{what}: expected an int or 'D/<subspace length>', got {spec!r}")
    C = as_int(spec, what, 1)
    if C > D:
        warnings.warn(SettingWarning(f"{what}: {C} is more than the row length D = {D}: clamped to {D}"))
        return D
    empty = empty_subspaces(D, C)
    if empty:
        warnings.warn(SettingWarning(f"{what}: {C} subspaces of ceil({D}/{C}) = {subspace_length(D, C)} "
                                     f"columns leave {empty} of them zero padding only; "
                                     f"{C - empty} or 'D/<ds>' would not"))
    return C


def gather_warnings(caught, limit=3):
    """One line per kind of :class:`~tabconv_np.errors.SettingWarning` in ``caught`` (from
    ``warnings.catch_warnings(record=True)``), naming up to ``limit`` of its layers; other warnings
    are issued again."""
    kinds = {}
    for w in caught:
        if not issubclass(w.category, SettingWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            continue
        text = str(w.message)
        kind = "clamped" if "clamped" in text else "padding" if "padding" in text else text
        kinds.setdefault(kind, []).append(text)
    out = []
    for texts in kinds.values():
        more = f" (and {len(texts) - limit} more layers)" if len(texts) > limit else ""
        out.append("; ".join(texts[:limit]) + more)
    return out
