""":func:`import_model`: a network from a PyTorch, ONNX or Keras file, whatever its format.

The source format is told by content, not by file name
(:func:`~tabconv_np.importers.formats.detect_format`); each format has its
own module, which this one calls.  Imports go one way: this module imports
the format modules, and they import only the leaf :mod:`.formats`.
"""
import math
import os

import numpy as np

from ..errors import ConfigError, ShapeError, TabConvError, WeightFileError
from ..layers import bad_values
from ..models import parse_input
from ..validate import as_int
from .formats import detect_format
from .keras import import_keras
from .onnx_import import import_onnx
from .spec import build_from_spec
from .statedict import network_from_state_dict
from .torch_pickle import read_torch


def _preprocess(mean, std, channels):
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise ConfigError("give both --mean and --std (one value per input channel)")
    vals = []
    for what, v in (("mean", mean), ("std", std)):
        try:
            v = [float(x) for x in (v.split(",") if isinstance(v, str) else v)]
        except (TypeError, ValueError):
            raise ConfigError(f"--{what} must be comma-separated numbers, got {v!r}") from None
        if len(v) == 1:
            v = v * channels
        if len(v) != channels or not all(math.isfinite(x) for x in v):
            raise ConfigError(f"--{what} needs {channels} finite value(s), got {v}")
        vals.append(v)
    if min(vals[1]) <= 0:
        raise ConfigError(f"--std values must be positive, got {vals[1]}")
    return {"mean": vals[0], "std": vals[1]}


def import_model(source, arch=None, spec=None, input_shape=None, num_classes=None,
                 mean=None, std=None):
    """A :class:`~tabconv_np.network.Network` from a PyTorch, ONNX or Keras file.

    Parameters
    ----------
    source : str or os.PathLike
        ``torch.save`` file (zip or legacy), ONNX model, Keras ``.h5`` /
        ``.weights.h5`` / ``.keras``.
    arch : str, optional
        A bundled architecture (PyTorch state dicts only; guessed when unique).
    spec : dict, JSON string or path, optional
        Layer spec (``docs/import_spec.md``) for other PyTorch models and for
        Keras weights-only files.
    input_shape : (C, H, W) or "CxHxW", optional
    num_classes : int, optional
        Checked against the imported network's output.
    mean, std : per-channel lists or comma-separated strings, optional
        Input normalisation stored with the network (for ``tabconv eval``).

    Raises
    ------
    TabConvError
        A subclass for every failure: :class:`WeightFileError` (unreadable,
        truncated or corrupt file; :class:`UnsafePickleError` for pickles that
        ask for code), :class:`ConfigError` (unsupported layer or option),
        :class:`ShapeError` (weights that do not fit).
    """
    source = os.fspath(source)
    if isinstance(input_shape, str):
        input_shape = parse_input(input_shape)
    if input_shape is not None:
        input_shape = tuple(as_int(v, "input shape", 1) for v in input_shape)[-3:]
    if arch is not None and spec is not None:
        raise ConfigError("give either --arch or --spec, not both")
    fmt = detect_format(source)
    try:
        net = _import(fmt, source, arch, spec, input_shape, num_classes)
        if num_classes is not None and tuple(net.out_shape) != (int(num_classes),):
            raise ShapeError(f"{source}: the imported network outputs shape {tuple(net.out_shape)}, "
                             f"not {num_classes} classes")
        for k, v in net.state_dict().items():
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                raise WeightFileError(f"{source}: tensor {k!r} contains NaN or Inf (corrupt file?)")
        for k, why in bad_values(net.body):
            raise WeightFileError(f"{source}: tensor {k!r} {why}")
    except TabConvError:
        raise
    except Exception as e:  # anything else a corrupt file provokes
        raise WeightFileError(f"{source}: cannot import (corrupt or unusual file?): "
                              f"{type(e).__name__}: {e}") from None
    net.preprocess = _preprocess(mean, std, net.input_shape[0]) or net.preprocess
    net.meta.update(source=os.path.basename(source), source_format=fmt)
    return net


def _import(fmt, source, arch, spec, input_shape, num_classes):
    if fmt in ("torch-zip", "torch-legacy"):
        state = read_torch(source)
        if spec is not None:
            return build_from_spec(spec, state, input_shape=input_shape)
        return network_from_state_dict(state, arch, num_classes=num_classes, input_shape=input_shape)
    if arch is not None:
        raise ConfigError(f"--arch applies to PyTorch state dicts only; {source} is "
                          f"{'an ONNX model' if fmt == 'onnx' else 'a Keras file'}")
    if fmt == "onnx":
        if spec is not None:
            raise ConfigError(f"--spec does not apply to ONNX models (the graph describes the layers)")
        return import_onnx(source, input_shape)
    return import_keras(source, spec, input_shape)
