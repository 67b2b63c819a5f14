"""Argument checks shared by the whole package: ints, pairs, padding, layouts, choices, counts.

Every public function validates its arguments through these helpers, so that
one kind of bad value gets one message wherever it is passed.  Each helper
returns the normalised value or raises :class:`~tabconv_np.errors.ConfigError`
naming the argument and the value.  A leaf module: it imports nothing else
from the package but the errors.
"""
import numbers
import operator
import os
import stat

import numpy as np

from .errors import ConfigError

#: Layouts every layer and kernel accepts.
LAYOUTS = ("NCHW", "NHWC")

#: The most parameters (array elements, all layers together) a config or a file may
#: declare; checked before anything is allocated.  2**28 elements is 1 GiB of float32.
#: Raise it for larger networks: ``tabconv_np.validate.MAX_PARAMETERS = 2**30``.
MAX_PARAMETERS = 2 ** 28

#: The most bytes one compressed member (a zip entry, a gzip file) may declare or
#: decompress to; checked before it is read.  Override like :data:`MAX_PARAMETERS`.
MAX_BYTES = 2 ** 32

#: How many times its compressed size (plus 1 MiB) a zip member or gzip file may declare
#: or decompress to.  Deflate reaches about 1000 on zeros; weights compress by less than
#: 2, images by less than 10.
MAX_COMPRESSION = 100


def decompressed_limit(compressed):
    """Bytes ``compressed`` bytes may expand to: :data:`MAX_BYTES` and :data:`MAX_COMPRESSION`."""
    return min(MAX_BYTES, MAX_COMPRESSION * compressed + (1 << 20))

#: Bounds on ``n_prototypes`` (``K``, prototypes per PQ subspace) everywhere:
#: in a table layer, in a quantizer and in a conversion request.
N_PROTOTYPES_MIN, N_PROTOTYPES_MAX = 1, 16384


def as_int(v, name, minimum=None, maximum=None):
    """``v`` as a Python int in ``[minimum, maximum]`` (bools and floats refused)."""
    if type(v) is not int:                  # fast path for plain ints (bool is not int here)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise ConfigError(f"{name} must be an int, got {v!r} ({type(v).__name__})")
        v = operator.index(v)
    if minimum is not None and v < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {v}")
    return v


def as_float(v, name, minimum=None, positive=False):
    """``v`` as a finite Python float, ``>= minimum`` (or ``> 0`` when ``positive``)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {v!r:.80} ({type(v).__name__})")
    v = float(v)
    if not np.isfinite(v) or (minimum is not None and v < minimum) or (positive and v <= 0):
        need = "> 0" if positive else f">= {minimum}" if minimum is not None else "finite"
        raise ConfigError(f"{name} must be finite and {need}, got {v}")
    return v


def in_unit_interval(v, interval):
    """Whether ``v`` is a real number (not a bool) in ``interval``, one of ``"(0, 1)"``,
    ``"[0, 1)"``, ``"(0, 1]"``: the fractions conversion settings take."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        return False
    low = v >= 0 if interval[0] == "[" else v > 0
    return bool(low and (v <= 1 if interval[-1] == "]" else v < 1))


def check_parameters(count, what):
    """Refuse ``count`` parameter elements above :data:`MAX_PARAMETERS`, naming ``what``."""
    if count > MAX_PARAMETERS:
        raise ConfigError(f"{what}: {count:,} parameters exceed the limit of {MAX_PARAMETERS:,} "
                          f"(tabconv_np.validate.MAX_PARAMETERS; raise it if the network is real)")
    return count


def regular_file(path, error):
    """``path`` (str) if it names a regular file, else ``error`` naming it.

    Judged by ``os.stat`` before anything opens the file, so a FIFO, a device or
    a directory is refused instead of blocking a read.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
            "a device or socket"
        raise error(f"{path}: {kind}, not a regular file; give the path of a file")
    return path


def as_pair(v, name, minimum=1):
    """An int ``k`` or a pair of ints as ``(int, int)``, each ``>= minimum``."""
    if type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int \
            and v[0] >= minimum and v[1] >= minimum:
        return v                            # fast path
    if isinstance(v, (tuple, list, np.ndarray)):
        if len(v) != 2:
            raise ConfigError(f"{name} must be an int or a pair (h, w), got {v!r}")
        return (as_int(v[0], f"{name}[0]", minimum), as_int(v[1], f"{name}[1]", minimum))
    v = as_int(v, name, minimum)
    return (v, v)


def as_padding(padding, kernel_size=None, dilation=1, stride=1):
    """Padding in any accepted form as ``(top, bottom, left, right)``.

    Parameters
    ----------
    padding : int, (ph, pw), (top, bottom, left, right), "valid" or "same"
        Zero padding.  ``"same"`` (stride 1 only, as in PyTorch) pads
        ``d*(k-1)`` in total per axis, the extra pixel at the bottom/right.
    kernel_size : int or (kh, kw), optional
        Needed for ``"same"`` only.
    dilation, stride : int or pair
        Used by ``"same"`` only.

    Returns
    -------
    tuple of 4 non-negative ints
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if kernel_size is None:
                raise ConfigError("padding='same' needs the kernel size")
            if as_pair(stride, "stride") != (1, 1):
                raise ConfigError(f"padding='same' needs stride 1, got stride={stride!r}")
            kh, kw = as_pair(kernel_size, "kernel_size")
            dh, dw = as_pair(dilation, "dilation")
            th, tw = dh * (kh - 1), dw * (kw - 1)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        raise ConfigError(f"padding must be an int, a pair, a 4-tuple, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (tuple, list, np.ndarray)):
        if len(padding) == 2:
            ph, pw = as_pair(padding, "padding", 0)
            return (ph, ph, pw, pw)
        if len(padding) == 4:
            names = ("top", "bottom", "left", "right")
            return tuple(as_int(p, f"padding[{k}] ({names[k]})", 0) for k, p in enumerate(padding))
        raise ConfigError(
            f"padding must be an int, (ph, pw) or (top, bottom, left, right), got {padding!r}")
    p = as_int(padding, "padding", 0)
    return (p, p, p, p)


def as_layout(layout):
    """``layout`` if it is ``"NCHW"`` or ``"NHWC"``."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def channel_axis(layout):
    """Axis of the channels in a 4-d batch of ``layout``: 1 (NCHW) or 3 (NHWC)."""
    return 1 if as_layout(layout) == "NCHW" else 3


def batch_axis(axis, ndim, layout):
    """Axis of a batch array (``ndim`` dimensions) that holds per-image axis ``axis`` in
    PyTorch's order (0: channels): in an NHWC image batch the channels are last."""
    if ndim == 4 and as_layout(layout) == "NHWC":
        return (3, 1, 2)[axis]
    return axis + 1


def as_choice(v, name, choices):
    """``v`` if it is one of ``choices``."""
    if v not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {v!r}")
    return v


def as_n_prototypes(v, name="n_prototypes"):
    """``K``, prototypes per subspace: an int in ``[N_PROTOTYPES_MIN, N_PROTOTYPES_MAX]``."""
    return as_int(v, name, N_PROTOTYPES_MIN, N_PROTOTYPES_MAX)


def as_n_codebooks(v, D, name="n_codebooks"):
    """``C``, subspaces of a row of ``D`` columns: an int in ``[1, D]``."""
    return as_int(v, f"{name} (row length D = {D})", 1, D)


def check_keys(mapping, allowed, what):
    """Refuse keys of ``mapping`` outside ``allowed``, naming them and the allowed ones."""
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise ConfigError(f"{what}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return mapping
