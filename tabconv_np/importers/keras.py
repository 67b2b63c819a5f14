"""Keras models -> tabconv_np networks, read with h5py alone (no TensorFlow, no Keras).

Files:

* Keras 2 ``model.save("m.h5")``: root attribute ``model_config`` (JSON layer
  list) and ``/model_weights/<layer>/<layer>/kernel:0`` etc., the layer order in
  the ``layer_names`` attribute, each layer's weights in ``weight_names``;
* Keras 2 ``model.save_weights("w.h5")``: the same weight groups at the root,
  no config -- needs a spec;
* Keras 3 ``model.save_weights("w.weights.h5")``:
  ``/layers/<name>/vars/0, 1, ...`` (``<name>`` is the snake-case class name
  with a counter: ``conv2d``, ``conv2d_1``, ``dense``, ...), no config -- needs
  a spec whose keys are those names;
* Keras 3 ``model.save("m.keras")``: a zip of ``config.json`` and
  ``model.weights.h5`` (as above).

Layers: :data:`KERAS_LAYERS`, activations :data:`ACTIVATIONS` (inside a layer
or as an ``Activation``); a final ``softmax`` is dropped with a warning (the
network returns logits, same argmax).  Sequential and functional models: the
functional graph becomes a graph spec (``inputs`` per layer, ``outputs`` for
several), so residual ``Add``, ``Multiply`` gates and ``Concatenate`` import.
``hard_sigmoid`` is Keras 3's ``relu6(x + 3) / 6``.

Conversions: conv kernels HWIO -> OIHW, Dense kernels (in, out) -> (out, in);
a Dense after a Flatten of a channels-last ``H x W x C`` map gets its input
rows permuted to ``C, H, W`` order (tabconv_np flattens channels first);
batch-norm epsilon from the config (Keras' default is 1e-3, not 1e-5);
``padding="same"`` by TensorFlow's rule (extra pixel bottom/right).  The
imported network takes NCHW input like every tabconv_np network (or NHWC with
``net(x, layout="NHWC")``).
"""
import io
import json
import os
import re
import warnings
from collections import OrderedDict

import numpy as np

from ..errors import ConfigError, TabConvError, WeightFileError
from ..h5safe import open_h5, read
from ..validate import check_parameters
from .formats import open_zip, read_member, read_source
from .spec import build_from_spec, load_spec

KERAS_EPS = 1e-3
#: Keras 3 variable order of the layers with other weights than a kernel and a bias.
_KERNELS = {"dwconv": ["depthwise_kernel", "bias"], "sepconv": ["depthwise_kernel", "pointwise_kernel", "bias"],
            "prelu": ["alpha"]}
_BN_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
             "moving_variance": "running_var"}


def snake_case(name):
    """Keras' file name of a layer class: ``MaxPooling2D`` -> ``max_pooling2d``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


# --- reading the weights ----------------------------------------------------------------------
def _attr_list(obj, name):
    v = obj.attrs.get(name)
    if v is None:
        return None
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in np.asarray(v).reshape(-1)]


def _dataset(ds, where):
    import h5py
    if not isinstance(ds, h5py.Dataset):
        raise WeightFileError(f"{where} is not a dataset")
    if ds.dtype.kind != "f" or ds.ndim > 4:
        raise WeightFileError(f"{where} has dtype {ds.dtype} and shape {ds.shape}, expected float weights")
    try:
        check_parameters(ds.size, where)
    except ConfigError as e:
        raise WeightFileError(str(e)) from None
    return np.asarray(read(ds, where), np.float32)


def _named_weights(group, where):
    """Keras 2 layer group -> OrderedDict short name (kernel, bias, gamma, ...) -> array."""
    names = _attr_list(group, "weight_names") or []
    out = OrderedDict()
    for wn in names:
        short = wn.split("/")[-1].split(":")[0]
        out[short] = _dataset(group[wn], f"{where}/{wn}")
    return out


def _vars(group, where):
    """Keras 3 ``<layer>/vars`` group -> list of arrays in index order."""
    keys = list(group.keys())
    if not all(k.isdigit() for k in keys):
        raise WeightFileError(f"{where}: unexpected entries {keys[:6]}")
    return [_dataset(group[k], f"{where}/{k}") for k in sorted(keys, key=int)]


def _torch_params(kind, weights, where, bn_center=True, bn_scale=True):
    """Keras weights of one layer -> PyTorch-convention ``{param: array}``.

    ``weights`` is a dict of Keras names (Keras 2) or a list in Keras 3 order.
    ``kind`` is ``conv`` / ``dense`` / ``bn`` or None (guess from the shapes).
    """
    if isinstance(weights, list):
        if kind is None:
            if weights and weights[0].ndim == 4:
                kind = "conv"
            elif weights and weights[0].ndim == 2:
                kind = "dense"
            elif len(weights) == 4 and all(w.ndim == 1 for w in weights):
                kind = "bn"
            elif not weights:
                return {}
            else:
                raise WeightFileError(f"{where}: cannot tell what layer holds {len(weights)} variable(s) "
                                      f"of shapes {[w.shape for w in weights]}")
        if kind in ("conv", "dense"):
            names = ["kernel", "bias"][:len(weights)]
        elif kind in _KERNELS:
            names = _KERNELS[kind][:len(weights)]
        elif kind == "bn":
            names = (["gamma"] if bn_scale else []) + (["beta"] if bn_center else []) + \
                ["moving_mean", "moving_variance"]
        else:
            names = []
        if len(names) != len(weights):
            raise WeightFileError(f"{where}: {len(weights)} variable(s), expected {len(names)} for a "
                                  f"{kind} layer")
        weights = OrderedDict(zip(names, weights))
    out = {}
    if kind == "dwconv" and "kernel" in weights:        # Keras 3 names a depthwise kernel "kernel"
        weights = OrderedDict(("depthwise_kernel" if k == "kernel" else k, v) for k, v in weights.items())
    for name, w in weights.items():
        if name == "depthwise_kernel":                   # (kh, kw, C, multiplier) -> (C*m, 1, kh, kw)
            if w.ndim != 4:
                raise WeightFileError(f"{where}: depthwise kernel of shape {w.shape}, expected 4 dimensions")
            dw = np.ascontiguousarray(w.transpose(2, 3, 0, 1).reshape(-1, 1, *w.shape[:2]))
            out["depthwise.weight" if "pointwise_kernel" in weights else "weight"] = dw
        elif name == "pointwise_kernel":
            out["weight"] = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
        elif name == "alpha":                            # PReLU slopes, shared over H and W
            if any(d != 1 for d in w.shape[:-1]):
                raise ConfigError(f"{where}: PReLU slopes of shape {w.shape}; only slopes shared over "
                                  f"H and W (shared_axes=[1, 2]) are supported")
            out["weight"] = np.ascontiguousarray(w.reshape(-1))
        elif name == "kernel":
            if w.ndim == 4:
                out["weight"] = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
            elif w.ndim == 2:
                out["weight"] = np.ascontiguousarray(w.T)
            else:
                raise WeightFileError(f"{where}: kernel of shape {w.shape}, expected 2 or 4 dimensions")
        elif name == "bias":
            out["bias"] = w
        elif name in _BN_NAMES:
            out[_BN_NAMES[name]] = w
        else:
            raise ConfigError(f"{where}: unsupported weight {name!r} (only the weights of the layers "
                              f"in KERAS_LAYERS can be imported)")
    return out


# --- configs ----------------------------------------------------------------------------------
def _layer_list(cfg, where):
    """``[(class_name, config), ...]`` of a Sequential or chain-shaped functional model config."""
    if not isinstance(cfg, dict) or "class_name" not in cfg:
        raise WeightFileError(f"{where}: the model config is not a Keras model description")
    kind, inner = cfg["class_name"], cfg.get("config")
    layers = inner if isinstance(inner, list) else (inner or {}).get("layers")
    if kind not in ("Sequential", "Functional", "Model") or not isinstance(layers, list):
        raise ConfigError(f"{where}: a Keras {kind} model; only Sequential and functional "
                          f"models can be imported")
    out = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("config"), dict):
            raise WeightFileError(f"{where}: bad layer entry {i} in the model config")
        out.append((str(layer.get("class_name")), layer["config"], layer.get("inbound_nodes")))
    return [(c, cfg_) for c, cfg_, _ in out], inner if isinstance(inner, dict) else {}


def _graph_of(layers_cfg, inner):
    """``(inbound, outputs)`` of a functional model: layer name -> the layer names it is called
    on (the input layer as ``"input"``), and the output layer names; None for a Sequential."""
    raw = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(raw, list) or not any(layer.get("inbound_nodes") for layer in raw):
        return None
    inputs = {str(cfg.get("name")) for c, cfg in layers_cfg if c == "InputLayer"}
    inbound = {}
    for layer in raw:
        name = str(layer.get("config", {}).get("name", layer.get("name")))
        inbound[name] = ["input" if v in inputs else v for v in _inbound_names(layer.get("inbound_nodes") or [])]
    outs = inner.get("output_layers") or [[str(layers_cfg[-1][1].get("name")), 0, 0]]
    outs = [outs] if outs and isinstance(outs[0], str) else outs
    return inbound, [str(o[0]) for o in outs]


def _inbound_names(nodes):
    """Layer names a functional layer is called on (Keras 2 and Keras 3 config forms)."""
    names = []

    def walk(v):
        if isinstance(v, dict):
            hist = v.get("config", {}).get("keras_history") if isinstance(v.get("config"), dict) else None
            if hist:
                names.append(hist[0])
                return
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            if len(v) >= 3 and isinstance(v[0], str) and isinstance(v[1], int):
                names.append(v[0])
                return
            for x in v:
                walk(x)

    walk(nodes)
    return names


def _input_shape(layers, inner, build_cfg):
    """(C, H, W) from the config, or None."""
    shape = None
    for cls, cfg in layers:
        shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
        if shape:
            break
    if not shape and isinstance(build_cfg, dict):
        shape = build_cfg.get("input_shape")
    if not shape or len(shape) != 4 or any(s is None for s in shape[1:]):
        return None
    fmt = next((cfg.get("data_format") for _, cfg in layers if cfg.get("data_format")), "channels_last")
    h, w, c = shape[1:] if fmt == "channels_last" else (shape[2], shape[3], shape[1])
    return (int(c), int(h), int(w))


#: Keras activations (``activation=`` of a layer, or an ``Activation`` layer) -> spec entries.
ACTIVATIONS = {
    "relu": [{"type": "relu"}], "relu6": [{"type": "relu6"}], "sigmoid": [{"type": "sigmoid"}],
    "tanh": [{"type": "tanh"}], "hard_sigmoid": [{"type": "hardsigmoid"}],   # Keras 3: relu6(x + 3) / 6
    "hard_swish": [{"type": "hardswish"}], "hard_silu": [{"type": "hardswish"}],
    "leaky_relu": [{"type": "leakyrelu", "alpha": 0.2}], "softmax": [{"type": "softmax"}],
}


def _activation(name, layer_name, last, where):
    if name in (None, "linear"):
        return []
    if name == "softmax" and last:
        warnings.warn(f"{where}: the final softmax of layer {layer_name!r} is dropped; the network "
                      f"returns logits (same predicted classes)", stacklevel=4)
        return ["softmax"]
    if name not in ACTIVATIONS:
        raise ConfigError(f"{where}: layer {layer_name!r}: activation {name!r} is not supported "
                          f"(supported: {', '.join(ACTIVATIONS)})")
    return [dict(a) for a in ACTIVATIONS[name]]


def _act_name(v):
    if isinstance(v, dict):  # Keras 3 serialised activation objects
        v = v.get("config", {}).get("name") if isinstance(v.get("config"), dict) else v.get("class_name")
    return v if v is None else str(v).lower()


def _conv_entry(cls, cfg, key, name):
    """Spec entries of Conv2D, DepthwiseConv2D (groups = channels) and SeparableConv2D (a
    depthwise then a 1x1 conv)."""
    geo = {"stride": list(cfg.get("strides", (1, 1))), "padding": cfg.get("padding", "valid"),
           "dilation": list(cfg.get("dilation_rate", (1, 1)))}
    if cls == "Conv2D":
        return [{"type": "conv", "key": key, **geo, "groups": int(cfg.get("groups", 1)), "name": name}]
    dw = {"type": "conv", "groups": "depthwise", **geo}
    if cls == "DepthwiseConv2D":
        return [dict(dw, key=key, name=name)]
    return [dict(dw, key=f"{key}.depthwise", name=f"{name}_depthwise"), {"type": "conv", "key": key, "name": name}]


def _zero_padding(p, name, where):
    """Keras ZeroPadding2D ``padding`` -> (top, bottom, left, right)."""
    if isinstance(p, int):
        return [p] * 4
    if isinstance(p, (list, tuple)) and len(p) == 2:
        if all(isinstance(v, int) for v in p):
            return [p[0], p[0], p[1], p[1]]
        if all(isinstance(v, (list, tuple)) and len(v) == 2 for v in p):
            return [p[0][0], p[0][1], p[1][0], p[1][1]]
    raise ConfigError(f"{where}: layer {name!r}: ZeroPadding2D padding {p!r} is not understood")


def _layer_entries(cls, cfg, name, key, last, where):
    """``(spec entries, activation entries)`` of one Keras layer; ConfigError for an unknown type."""
    fmt = cfg.get("data_format") or "channels_last"
    act = lambda: _activation(_act_name(cfg.get("activation")), name, last, where)  # noqa: E731
    if cls in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
        if int(cfg.get("depth_multiplier", 1)) < 1:
            raise ConfigError(f"{where}: layer {name!r}: depth_multiplier must be >= 1")
        return _conv_entry(cls, cfg, key, name), act()
    if cls == "Dense":
        return [{"type": "linear", "key": key, "name": name}], act()
    if cls == "BatchNormalization":
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if axis not in ((-1, 3) if fmt == "channels_last" else (1,)):
            raise ConfigError(f"{where}: layer {name!r}: batch norm over axis {axis} is not supported")
        return [{"type": "bn", "key": key, "eps": float(cfg.get("epsilon", KERAS_EPS)), "name": name}], []
    if cls in ("MaxPooling2D", "AveragePooling2D", "MaxPool2D", "AvgPool2D"):
        pool = list(cfg.get("pool_size", (2, 2)))
        return [{"type": "maxpool" if cls.startswith("Max") else "avgpool", "kernel": pool,
                 "stride": list(cfg.get("strides") or pool), "padding": cfg.get("padding", "valid"),
                 "name": name}], []
    if cls in ("GlobalAveragePooling2D", "GlobalAvgPool2D", "GlobalMaxPooling2D", "GlobalMaxPool2D"):
        out = [{"type": "gap" if "Av" in cls else "gmp", "name": name}]
        return out + ([] if cfg.get("keepdims", False) else [{"type": "flatten"}]), []
    if cls == "Flatten":
        return [{"type": "flatten", "order": "hwc" if fmt == "channels_last" else "chw", "name": name}], []
    if cls == "Activation":
        return [], act()
    if cls == "ReLU":
        if cfg.get("negative_slope") or cfg.get("threshold"):
            raise ConfigError(f"{where}: layer {name!r}: ReLU with negative_slope or threshold "
                              f"is not supported")
        mx = cfg.get("max_value")
        return [], [{"type": "relu"}] if mx is None else [{"type": "clip", "min": 0.0, "max": float(mx)}]
    if cls == "LeakyReLU":
        return [{"type": "leakyrelu", "alpha": float(cfg.get("negative_slope", cfg.get("alpha", 0.3))),
                 "name": name}], []
    if cls == "PReLU":
        return [{"type": "prelu", "key": key, "name": name}], []
    if cls == "ZeroPadding2D":
        return [{"type": "pad", "padding": _zero_padding(cfg.get("padding", 1), name, where), "name": name}], []
    if cls in ("Dropout", "SpatialDropout2D", "GaussianDropout", "AlphaDropout"):
        return [{"type": "dropout", "p": float(cfg.get("rate", 0.5)), "name": name}], []
    if cls in ("Add", "Multiply"):
        return [{"type": "add" if cls == "Add" else "mul", "name": name}], []
    if cls == "Concatenate":
        axis = cfg.get("axis", -1)
        if axis not in (-1, 3):
            raise ConfigError(f"{where}: layer {name!r}: Concatenate along axis {axis}; only the "
                              f"channels (axis -1) are supported")
        return [{"type": "concat", "axis": 0, "name": name}], []
    raise ConfigError(f"{where}: unsupported Keras layer {cls} ({name!r}); supported layer types: "
                      f"{', '.join(KERAS_LAYERS)}")


#: The Keras layer types the importer reads (the README lists them from here).
KERAS_LAYERS = ("InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense",
                "BatchNormalization", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
                "GlobalMaxPooling2D", "Flatten", "Activation", "ReLU", "LeakyReLU", "PReLU",
                "ZeroPadding2D", "Dropout", "Add", "Multiply", "Concatenate")


def layers_markdown():
    """The README's list of supported Keras layer types and activations, from :data:`KERAS_LAYERS`
    and :data:`ACTIVATIONS`."""
    return (f"Layer types: {', '.join(KERAS_LAYERS)}.  Activations (`activation=` of a layer, or "
            f"an `Activation` layer): {', '.join(ACTIVATIONS)}, linear.")


def spec_from_config(layers, where, key_of=None, graph=None):
    """A spec (see :mod:`.spec`) from ``[(class_name, config), ...]``; ``key_of`` maps layer name
    -> key; ``graph``: ``(inbound, outputs)`` of a functional model (:func:`_graph_of`), whose
    layers then name their inputs.  Returns ``(layers, dropped softmax, outputs or None)``."""
    key_of = key_of or (lambda name: name)
    spec, dropped = [], False
    body = [(c, cfg) for c, cfg in layers if c != "InputLayer"]
    inbound, outputs = graph if graph is not None else ({}, None)
    prev = "input"
    for i, (cls, cfg) in enumerate(body):
        name = str(cfg.get("name", f"layer{i}"))
        last = outputs == [name] if graph is not None else all(c == "Dropout" for c, _ in body[i + 1:])
        entries, acts = _layer_entries(cls, cfg, name, key_of(name), last, where)
        if "softmax" in acts:
            dropped, acts = True, [a for a in acts if a != "softmax"]
        entries = (entries + acts) or [{"type": "identity"}]
        ins = inbound.get(name)
        if graph is not None and (ins != [prev] or entries[0]["type"] in ("add", "mul", "concat")):
            if not ins:
                raise ConfigError(f"{where}: layer {name!r} ({cls}) is called on no layer")
            entries[0]["inputs"] = ins
        for e in entries:       # the layer's name is its last entry's: what later layers read
            e.pop("name", None)
        entries[-1]["name"] = name
        spec += entries
        prev = name
    return spec, dropped, (outputs if graph is not None else None)


# --- the four file layouts --------------------------------------------------------------------
def _layer_kinds(layers):
    """Layer name -> (kind, center, scale) for the config's weighted layers."""
    kinds = {}
    for cls, cfg in layers:
        name = str(cfg.get("name"))
        if cls == "Conv2D":
            kinds[name] = ("conv", True, True)
        elif cls == "Dense":
            kinds[name] = ("dense", True, True)
        elif cls == "BatchNormalization":
            kinds[name] = ("bn", bool(cfg.get("center", True)), bool(cfg.get("scale", True)))
        elif cls in _WEIGHTED:
            kinds[name] = (_WEIGHTED[cls], True, True)
    return kinds


_WEIGHTED = {"DepthwiseConv2D": "dwconv", "SeparableConv2D": "sepconv", "PReLU": "prelu"}


def _read_keras2(root, where, layer_names, kinds=None):
    state = OrderedDict()
    for name in layer_names:
        if name not in root:
            raise WeightFileError(f"{where}: layer group {name!r} listed in layer_names is missing")
        kind = (kinds or {}).get(name, (None,))[0]
        for p, v in _torch_params(kind, _named_weights(root[name], f"{where}:/{root[name].name.strip('/')}"),
                                  f"{where}: layer {name!r}").items():
            state[f"{name}.{p}"] = v
    return state


def _keras3_root(f):
    for top in ("layers", "_layer_checkpoint_dependencies"):
        if top in f:
            return f[top]
    return None


def _read_keras3(f, where, order=None):
    """State from ``layers/<name>/vars``; ``order``: [(store name, key, kind tuple)] or None (all, guessed)."""
    root = _keras3_root(f)
    state = OrderedDict()
    if order is None:
        order = [(n, n, None) for n in root.keys()]
    for store, key, kind in order:
        if store not in root or "vars" not in root[store]:
            raise WeightFileError(f"{where}: no weights for layer {key!r} (expected group "
                                  f"/{root.name.strip('/')}/{store}/vars)")
        ws = _vars(root[store]["vars"], f"{where}:/{root.name.strip('/')}/{store}/vars")
        k, center, scale = kind or (None, True, True)
        for p, v in _torch_params(k, ws, f"{where}: layer {key!r}", center, scale).items():
            state[f"{key}.{p}"] = v
    return state


def _keras3_store_names(layers):
    """Layer name -> Keras 3 store name (snake-case class name + per-class counter), in order."""
    out, used = {}, {}
    for cls, cfg in layers:
        if cls == "InputLayer":
            continue
        base = snake_case(cls)
        used[base] = used.get(base, -1) + 1
        out[str(cfg.get("name"))] = base if used[base] == 0 else f"{base}_{used[base]}"
    return out


def _finish(spec_layers, state, input_shape, where, meta, dropped, spec_input, outputs=None):
    spec = {"input": list(input_shape or spec_input or []) or None, "layers": spec_layers,
            "channels_last": True}
    if outputs and len(outputs) > 1:
        spec["outputs"] = outputs
    if spec["input"] is None:
        raise ConfigError(f"{where}: the model config has no input shape; pass --input CxHxW")
    meta = dict(meta or {})
    if dropped:
        meta["dropped_softmax"] = True
    return build_from_spec(spec, state, channels_last=True, default_eps=KERAS_EPS, meta=meta)


def import_keras(path, spec=None, input_shape=None, meta=None):
    """A :class:`~tabconv_np.network.Network` from a Keras ``.h5``, ``.weights.h5`` or ``.keras`` file.

    Parameters
    ----------
    path : str or os.PathLike
    spec : dict, JSON string or path, optional
        Layer list (see :mod:`.spec`; keys are Keras layer names, ``input`` is
        ``[C, H, W]``); required for weights-only files, overrides the file's
        config otherwise.  ``channels_last`` defaults to true, ``bn`` eps to 1e-3.
    input_shape : (C, H, W), optional
        Overrides the input shape of the config or spec.

    Raises
    ------
    ConfigError
        Unsupported layer, or a weights-only file without ``spec``.
    WeightFileError
        Unreadable, truncated or corrupt file.
    ShapeError
        Weights that do not fit the layers.
    """
    path = os.fspath(path)
    head = read_source(path, 8)
    try:
        if head[:4] == b"PK\x03\x04":
            return _import_keras3_zip(path, spec, input_shape, meta)
        with open_h5(path, path) as f:
            return _import_h5(f, path, spec, input_shape, meta)
    except TabConvError:
        raise
    except Exception as e:  # h5py / zip / json errors of corrupt files
        raise WeightFileError(f"{path}: corrupt Keras file: {type(e).__name__}: {e}") from None


def _need_spec(where, keys):
    return ConfigError(f"{where}: this Keras file holds weights only, without the layer order; "
                       f"describe the layers with --spec spec.json (see docs/import_spec.md). Its "
                       f"layer keys are: {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}")


def _import_h5(f, where, spec, input_shape, meta):
    if "tabconv_np_format" in f.attrs:
        raise ConfigError(f"{where}: already a tabconv_np network file; use it directly "
                          f"(tabconv eval / ops / convert)")
    if "model_weights" in f and "layer_names" in f["model_weights"].attrs:      # Keras 2 model.save
        root = f["model_weights"]
        if spec is not None:
            return _with_spec(spec, _read_keras2(root, where, _attr_list(root, "layer_names")),
                              input_shape, meta)
        raw = f.attrs.get("model_config")
        if raw is None:
            raise _need_spec(where, _attr_list(root, "layer_names"))
        cfg = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
        layers, inner = _layer_list(cfg, where)
        spec_layers, dropped, outputs = spec_from_config(layers, where, graph=_graph_of(layers, inner))
        state = _read_keras2(root, where, _attr_list(root, "layer_names"), _layer_kinds(layers))
        return _finish(spec_layers, state, input_shape, where, meta, dropped,
                       _input_shape(layers, inner, cfg.get("build_config")), outputs)
    if "layer_names" in f.attrs:                                                # Keras 2 save_weights
        names = _attr_list(f, "layer_names")
        state = _read_keras2(f, where, names)
        if spec is None:
            raise _need_spec(where, [n for n in names if f"{n}.weight" in state or f"{n}.running_mean" in state])
        return _with_spec(spec, state, input_shape, meta)
    if _keras3_root(f) is not None:                                             # Keras 3 .weights.h5
        state = _read_keras3(f, where)
        if spec is None:
            raise _need_spec(where, sorted({k.rsplit(".", 1)[0] for k in state}))
        return _with_spec(spec, state, input_shape, meta)
    raise WeightFileError(f"{where}: an HDF5 file, but neither a tabconv_np file nor a Keras model "
                          f"(no model_weights, layer_names or layers/ group)")


def _with_spec(spec, state, input_shape, meta):
    spec = dict(load_spec(spec))
    spec.setdefault("channels_last", True)
    return build_from_spec(spec, state, input_shape=input_shape, default_eps=KERAS_EPS, meta=meta)


def _import_keras3_zip(path, spec, input_shape, meta):
    zf = open_zip(read_source(path), path)
    names = zf.namelist()
    if "config.json" not in names or "model.weights.h5" not in names:
        raise WeightFileError(f"{path}: a zip archive, but neither a torch.save file nor a .keras model "
                              f"(no config.json and model.weights.h5)")
    cfg = json.loads(read_member(zf, "config.json", path).decode("utf-8"))
    weights = io.BytesIO(read_member(zf, "model.weights.h5", path))
    with open_h5(weights, f"{path}:model.weights.h5") as f:
        if _keras3_root(f) is None:
            raise WeightFileError(f"{path}: model.weights.h5 has no layers/ group")
        if spec is not None:
            return _with_spec(spec, _read_keras3(f, path), input_shape, meta)
        layers, inner = _layer_list(cfg, path)
        stores = _keras3_store_names(layers)
        kinds = _layer_kinds(layers)
        root = _keras3_root(f)
        order = []
        for name, kind in kinds.items():
            store = stores.get(name, name)
            if store not in root and name in root:   # tf.keras 2.13-2.15 used layer names
                store = name
            order.append((store, name, kind))
        spec_layers, dropped, outputs = spec_from_config(layers, path, graph=_graph_of(layers, inner))
        state = _read_keras3(f, path, order)
        return _finish(spec_layers, state, input_shape, path, meta, dropped,
                       _input_shape(layers, inner, cfg.get("build_config")), outputs)
