"""Saving and loading whole networks as HDF5 files.

Schema (version 1; also in docs/hdf5_schema.md)::

    /                       attributes:
        tabconv_np_format   int, 1
        config              JSON (fixed-length bytes, UTF-8): Network.config() (architecture, input
                            shape, preprocess, layout, meta)
    /params/<key>           one dataset per state_dict key, e.g.
                            /params/layer1.0.bn1.running_var; float16, float32
                            or float64 for float parameters (loaded as the
                            parameter's dtype, float32), integer datasets for
                            integer parameters (table codes)

A file round-trips bit-exactly in float32.  Loading validates everything
before a kernel sees it and raises :class:`~tabconv_np.errors.WeightFileError`
naming the file and the dataset: not HDF5, truncated, damaged (checksums),
links or data outside the file (:mod:`tabconv_np.h5safe`), missing or extra
dataset, wrong shape or dtype, NaN/Inf, negative variance, unknown or
invalid architecture.  Nothing is unpickled: the config is JSON.
"""
import json
import os
import warnings

import numpy as np

from .errors import ConfigError, TabConvError, WeightFileError
from .h5safe import open_h5, read
from .outputs import check_output, write_atomic
from .layers import bad_values
from .network import FORMAT_VERSION, Network, check_input_shape


def save(net, path, dtype=None, *, overwrite=False):
    """Write ``net`` to ``path`` (HDF5), atomically and with checksums.

    The file is written to a temporary file in the same directory and renamed
    into place, so an interrupted save never leaves a partial file or destroys
    the previous one.  Every non-empty dataset carries HDF5's Fletcher-32
    checksum and the file uses the latest format version, whose metadata is
    checksummed too: a damaged file is an error on load, never another network.

    Parameters
    ----------
    net : Network
    path : str or os.PathLike
    dtype : {None, "float32", "float16"}
        Storage dtype of float parameters; None keeps each parameter's own (float32).
    overwrite : bool
        Replace an existing file at ``path``; without it an existing file is an error.

    Raises
    ------
    OutputError
        ``path`` exists (and ``overwrite`` is False), or its directory is missing
        or not writable.
    """
    import h5py
    if dtype not in (None, "float32", "float16", np.float32, np.float16):
        raise ConfigError(f"save: dtype must be float32 or float16, got {dtype!r}")
    path = check_output(path, overwrite=overwrite)

    def write(tmp):
        with h5py.File(tmp, "w", libver="latest") as f:
            f.attrs["tabconv_np_format"] = FORMAT_VERSION
            # fixed-length bytes live in the checksummed object header; a variable-length
            # string would live in the global heap, which has no checksum
            f.attrs["config"] = np.bytes_(json.dumps(net.config()).encode())
            g = f.create_group("params")
            for key, v in net.state_dict().items():
                if dtype is not None and v.dtype.kind == "f":
                    v = v.astype(dtype)
                g.create_dataset(key, data=v, fletcher32=v.size > 0 and v.ndim > 0)

    write_atomic(path, write)


def load(path):
    """Rebuild the network saved at ``path`` by :func:`save`.

    The file is opened read-only and checked whole first (:func:`tabconv_np.h5safe.open_h5`:
    no links, no data in other files, nothing unwritten).  A file written before
    checksums were added loads with a warning: its damage cannot be detected.

    Raises
    ------
    WeightFileError
        The file or one of its datasets is unusable; the message says which and why.
    """
    import h5py
    path = os.fspath(path)
    with open_h5(path, path) as f:
        version = int(f.attrs.get("tabconv_np_format", -1))
        raw = f.attrs.get("config")
        if version == -1 or raw is None:
            raise WeightFileError(f"{path}: not a tabconv_np weight file (no 'tabconv_np_format' or "
                                  f"'config' attribute); to bring a model from PyTorch/ONNX/Keras "
                                  f"use 'tabconv import'")
        if version > FORMAT_VERSION:
            raise WeightFileError(f"{path}: format version {version} is newer than this "
                                  f"tabconv_np understands ({FORMAT_VERSION})")
        net = _network(path, raw)
        if "params" not in f or not isinstance(f["params"], h5py.Group):
            raise WeightFileError(f"{path}: no 'params' group")
        own, group = net.state_dict(), f["params"]
        found = set(group.keys())
        missing = [k for k in own if k not in found]
        extra = sorted(found - set(own))
        if missing:
            raise WeightFileError(f"{path}: missing dataset(s) /params/{missing[0]}"
                                  f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}")
        if extra:
            raise WeightFileError(f"{path}: unexpected dataset(s) /params/{extra[0]}"
                                  f"{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}"
                                  f" for architecture {net.meta.get('arch', 'custom')}")
        unchecked = 0
        for key, param in own.items():
            param[...] = _read(path, group, key, param)
            unchecked += group[key].ndim > 0 and group[key].size > 0 and not group[key].fletcher32
        for key, why in bad_values(net.body):
            raise WeightFileError(f"{path}: dataset /params/{key} {why}")
        if unchecked:
            warnings.warn(f"{path}: {unchecked} dataset(s) without checksums (a file from an earlier "
                          f"tabconv_np): damage cannot be detected; re-save it to add them",
                          stacklevel=2)
    return net


def _network(path, raw):
    """The zero-filled network described by the ``config`` attribute ``raw``."""
    try:
        cfg = json.loads(raw)
        if not isinstance(cfg, dict):
            check_input_shape(None)           # the error of a config without a shape
        return Network.from_config(cfg)
    except TabConvError as e:
        raise WeightFileError(f"{path}: unknown or invalid architecture in 'config': {e}") from None
    except (ValueError, TypeError, RecursionError) as e:
        raise WeightFileError(f"{path}: bad 'config' attribute: {type(e).__name__}: {e}") from None


def _read(path, group, key, param):
    """Dataset ``key`` validated against ``param`` (shape, dtype kind, finiteness)."""
    import h5py
    ds = group[key]
    where = f"{path}: dataset /params/{key}"
    if not isinstance(ds, h5py.Dataset):
        raise WeightFileError(f"{where} is not a dataset")
    if ds.shape != param.shape:
        raise WeightFileError(f"{where} has shape {ds.shape}, expected {param.shape}")
    kind = ds.dtype.kind
    if param.dtype.kind == "f" and not (kind == "f" and ds.dtype.itemsize in (2, 4, 8)):
        raise WeightFileError(f"{where} has dtype {ds.dtype}, expected a float dtype")
    if param.dtype.kind in "iu" and kind not in "iu":
        raise WeightFileError(f"{where} has dtype {ds.dtype}, expected an integer dtype")
    v = read(ds, where)
    if kind == "f" and not np.isfinite(v).all():
        raise WeightFileError(f"{where} contains NaN or Inf")
    if param.dtype.kind in "iu" and v.size and (v.min() < np.iinfo(param.dtype).min
                                                or v.max() > np.iinfo(param.dtype).max):
        raise WeightFileError(f"{where} has values outside {param.dtype}")
    return v.astype(param.dtype, copy=False)
