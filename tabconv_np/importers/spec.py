"""Build any plain CNN from a small JSON spec plus a state dict.

The spec lists the layers in order and, for layers with weights, the state
dict key that feeds them; every shape (channels, kernel size, features) is
read from the weights.  A LeNet-style PyTorch model needs only::

    {"input": [1, 28, 28],
     "layers": [
       {"type": "conv", "key": "features.0", "padding": 2}, {"type": "relu"},
       {"type": "maxpool", "kernel": 2},
       {"type": "conv", "key": "features.3"}, {"type": "relu"},
       {"type": "maxpool", "kernel": 2},
       {"type": "flatten"},
       {"type": "linear", "key": "classifier.0"}, {"type": "relu"},
       {"type": "linear", "key": "classifier.2"}, {"type": "relu"},
       {"type": "linear", "key": "classifier.4"}]}

Top level
---------
``input``
    ``[C, H, W]`` of one image (channels first, whatever the source framework);
    ``--input`` overrides it.
``layers``
    The list below.
``preprocess`` (optional)
    ``{"mean": [...], "std": [...]}`` per channel, for ``tabconv eval``.
``channels_last`` (optional, default false; true for Keras sources)
    The weights come from a channels-last model: a ``linear`` right after a
    ``flatten`` of a ``C x H x W`` map gets its input rows permuted from
    ``H, W, C`` to ``C, H, W`` order (what Keras' Flatten feeds its Dense).

Layers (``type`` is case-insensitive; aliases in brackets)
----------------------------------------------------------
``conv`` [conv2d]
    ``key``; ``stride`` (1), ``padding`` (0; an int, ``[ph, pw]``,
    ``[top, bottom, left, right]``, ``"valid"`` or ``"same"`` -- TensorFlow's
    rule, extra pixel bottom/right), ``dilation`` (1), ``groups`` (1; ``"depthwise"``: one
    group per input channel).
    Reads ``<key>.weight`` (C_out, C_in/groups, kh, kw) and ``<key>.bias`` if present.
``bn`` [batchnorm, batchnorm2d]
    ``key``; ``eps`` (1e-5, or 1e-3 for Keras sources).  Reads
    ``<key>.running_mean``, ``<key>.running_var`` and, if present,
    ``<key>.weight``, ``<key>.bias``.
``linear`` [dense, fc, gemm]
    ``key``.  Reads ``<key>.weight`` (out, in) and ``<key>.bias`` if present.
    A ``flatten`` is inserted before it if its input is still an image.
``relu``, ``relu6``, ``clip`` (``min``, ``max``)
``maxpool`` / ``avgpool`` [maxpool2d, avgpool2d]
    ``kernel``; ``stride`` (= kernel), ``padding`` (0, ``[ph, pw]``,
    ``[top, bottom, left, right]``, ``"same"`` / ``"valid"``), ``ceil_mode``
    (false), ``count_include_pad`` (true: average pooling counts the padding;
    ``"same"`` padding never counts, as in Keras).
``globalavgpool`` [gap, adaptiveavgpool], ``globalmaxpool`` [gmp, adaptivemaxpool]
    Mean or maximum over H and W (keeps a 1x1 map; follow it with ``flatten``).
``prelu``
    ``key``; reads ``<key>.weight``, one slope per channel or one for all.
``leakyrelu`` (``alpha``, 0.01), ``sigmoid``, ``tanh``, ``hardsigmoid``
(``alpha`` 1/6, ``beta`` 1/2: PyTorch's), ``hardswish``, ``softmax`` (``axis``, 0)
    Element-wise activations (softmax over a per-image axis, 0 the channels).
``lrn`` [localresponsenorm]
    ``size`` (5), ``alpha`` (1e-4), ``beta`` (0.75), ``bias`` (1).
``pad`` [zeropad, zeropad2d]
    ``padding`` (an int, ``[ph, pw]`` or ``[top, bottom, left, right]``),
    ``mode`` (constant, reflect, edge), ``value`` (0).
``flatten``
    ``order``: ``"chw"`` (default), ``"hwc"`` (default when ``channels_last``) or any
    permutation of ``"chw"``: the order the source model flattened in, which the
    ``linear`` after it is permuted from.
``dropout``, ``identity``
    No-ops at inference.
``basicblock``
    ResNet basic block: ``key``, ``stride`` (1); reads ``<key>.conv1``,
    ``<key>.bn1``, ``<key>.conv2``, ``<key>.bn2`` and, for a projection
    shortcut, ``<key>.downsample.0/1`` (or ``<key>.shortcut.0/1``).
``add``, ``concat`` [cat], ``mul`` [multiply]
    Element-wise sum, concatenation along per-image ``axis`` (0, the channels)
    and element-wise product (broadcasting: a squeeze-excite gate) of the
    layers named in ``inputs`` (graph specs, below).

Every layer may also have ``name`` (default: derived from its key or type) and
``inputs`` (a list of layer names, ``"input"`` for the network input; default:
the layer before).  With ``inputs`` a spec describes a graph; residual
patterns that form a ResNet basic block become ``BasicBlock`` layers, anything
else a :class:`~tabconv_np.blocks.Graph`.  A top-level ``outputs`` (a list of
layer names) makes a network with several outputs, returned in that order.

Errors: a missing key, a weight of the wrong rank, or a shape that does not
follow from the layer before raise :class:`~tabconv_np.errors.ShapeError`
naming the key and the expected and found shapes; a malformed spec raises
:class:`~tabconv_np.errors.ConfigError` naming the layer.
"""
import json
import math
import os
import re
import warnings

import numpy as np

from ..errors import ConfigError, ShapeError, TabConvError
from ..blocks import INPUT, BasicBlock, Graph, Sequential
from ..activations import HardSigmoid, HardSwish, LeakyReLU, PReLU, Sigmoid, Softmax, Tanh
from ..joins import Binary, Concat
from ..layers import (LRN, AvgPool2d, BatchNorm2d, Clip, Conv2d, Dropout, Flatten, GlobalAvgPool2d,
                      GlobalMaxPool2d, Linear, MaxPool2d, ReLU)
from ..reshapes import Pad
from ..network import Network
from ..structure import Residual
from ..validate import as_pair, regular_file
from .statedict import clean_state

_ALIASES = {
    "conv": "conv", "conv2d": "conv",
    "bn": "bn", "batchnorm": "bn", "batchnorm2d": "bn", "batchnormalization": "bn",
    "linear": "linear", "dense": "linear", "fc": "linear", "gemm": "linear",
    "relu": "relu", "relu6": "relu6", "clip": "clip",
    "maxpool": "maxpool", "maxpool2d": "maxpool", "avgpool": "avgpool", "avgpool2d": "avgpool",
    "averagepool": "avgpool",
    "globalavgpool": "gap", "globalavgpool2d": "gap", "gap": "gap", "adaptiveavgpool": "gap",
    "globalaveragepool": "gap",
    "flatten": "flatten", "dropout": "dropout", "identity": "identity",
    "basicblock": "basicblock", "add": "add",
    "prelu": "prelu", "leakyrelu": "leakyrelu", "sigmoid": "sigmoid", "tanh": "tanh",
    "hardsigmoid": "hardsigmoid", "hardswish": "hardswish", "softmax": "softmax",
    "globalmaxpool": "gmp", "globalmaxpool2d": "gmp", "gmp": "gmp", "adaptivemaxpool": "gmp",
    "lrn": "lrn", "localresponsenorm": "lrn", "pad": "pad", "zeropad": "pad", "zeropad2d": "pad",
    "concat": "concat", "cat": "concat", "mul": "mul", "multiply": "mul",
}

#: Kinds that join several ``inputs``.
_JOINS = ("add", "concat", "mul")


# --- small helpers shared with the other importers ------------------------------------------
def same_padding(in_hw, kernel, stride, dilation=(1, 1)):
    """TensorFlow/Keras ``padding='same'``: ``(top, bottom, left, right)``, extra at the end."""
    pads = []
    for n, k, s, d in zip(in_hw, kernel, stride, dilation):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def simple_padding(pads):
    """``(top, bottom, left, right)`` in the simplest form Conv2d takes: int, pair or 4-tuple."""
    t, b, l, r = (int(p) for p in pads)
    if t == b and l == r:
        return t if t == l else (t, l)
    return (t, b, l, r)


def _pair(v, what, where):
    try:
        return as_pair(v, what, 0)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def sanitize(raw):
    """A child-module name from any label: word characters only, no dots."""
    return re.sub(r"\W+", "_", str(raw)).strip("_") or "layer"


def _config_key(m):
    """What makes two layers interchangeable (conv padding normalised, method ignored)."""
    cfg = dict(m.config())
    cfg.pop("method", None)
    if isinstance(m, Conv2d):
        cfg["padding"] = list(m.geometry.padding)
    return json.dumps(cfg, sort_keys=True)


# --- the graph builder ------------------------------------------------------------------------
class _Node:
    __slots__ = ("name", "raw", "inputs", "module")

    def __init__(self, name, raw, inputs, module):
        self.name, self.raw, self.inputs, self.module = name, raw, inputs, module


class Builder:
    """Collects layers (with shape inference) and assembles the simplest equivalent body.

    ``layer(raw_name, module, inp)`` appends a layer fed by node ``inp``
    (default: the last one), ``add(raw_name, inputs)`` an element-wise sum;
    both return the new node's name.  :meth:`body` returns a ``Sequential``
    when the nodes form a chain (after turning ResNet residual patterns into
    ``BasicBlock``\\ s), else a :class:`Graph`.
    """

    def __init__(self, input_shape):
        self.input_shape = tuple(int(v) for v in input_shape)
        self.nodes, self.shapes, self.flat_src = [], {INPUT: self.input_shape}, {}
        self.last = INPUT
        self._names = {INPUT}
        self.aliases = {}   # user-given names -> node names

    def unique(self, raw):
        base = sanitize(raw)
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def shape(self, value=None):
        return self.shapes[self.last if value is None else value]

    def layer(self, raw, module, inp=None):
        inp = self.last if inp is None else inp
        if inp not in self.shapes:
            raise ConfigError(f"layer {raw!r}: unknown input {inp!r}")
        try:
            out = tuple(module.out_shape(self.shapes[inp]))
        except TabConvError as e:
            raise ShapeError(f"layer {raw!r} ({type(module).__name__}) cannot take input of shape "
                             f"{self.shapes[inp]}: {e}") from None
        if isinstance(module, BatchNorm2d) and (len(self.shapes[inp]) != 3
                                                or self.shapes[inp][0] != module.num_features):
            raise ShapeError(f"layer {raw!r}: batch norm of {module.num_features} channels cannot take "
                             f"input of shape {self.shapes[inp]} (only image batch norm is supported)")
        name = self.unique(raw)
        self.nodes.append(_Node(name, str(raw), [inp], module))
        self.shapes[name] = out
        self.last = name
        return name

    def join(self, raw, module, inputs):
        """Append a join (a layer with ``multi_input``: Concat, Binary) fed by nodes ``inputs``."""
        inputs = list(inputs)
        for v in inputs:
            if v not in self.shapes:
                raise ConfigError(f"layer {raw!r}: unknown input {v!r}")
        try:
            out = tuple(module.out_shape([self.shapes[v] for v in inputs]))
        except TabConvError as e:
            raise ShapeError(f"layer {raw!r} ({type(module).__name__}) cannot take inputs of shapes "
                             f"{[self.shapes[v] for v in inputs]}: {e}") from None
        name = self.unique(raw)
        self.nodes.append(_Node(name, str(raw), inputs, module))
        self.shapes[name] = out
        self.last = name
        return name

    def add(self, raw, inputs):
        inputs = list(inputs)
        for v in inputs:
            if v not in self.shapes:
                raise ConfigError(f"add {raw!r}: unknown input {v!r}")
        shapes = [self.shapes[v] for v in inputs]
        if len(inputs) < 2 or len(set(shapes)) != 1:
            raise ShapeError(f"add {raw!r}: needs two or more inputs of one shape, got {shapes}")
        name = self.unique(raw)
        self.nodes.append(_Node(name, str(raw), inputs, None))
        self.shapes[name] = shapes[0]
        self.last = name
        return name

    # -- assembling ------------------------------------------------------------------------
    def body(self, output=None):
        """The assembled body; ``output`` a node name (default the last node) or a list of
        them (a network with several outputs: always a :class:`Graph`)."""
        outputs = [self.last if output is None else output] if not isinstance(output, list) else output
        if INPUT in outputs or not self.nodes:
            raise ConfigError("the model has no layers")
        if len(set(outputs)) != len(outputs):
            raise ConfigError(f"the model returns one value twice among its outputs {outputs}")
        nodes, outputs = _fold_blocks(list(self.nodes), outputs, self)
        # drop nodes that do not lead to an output
        need, keep = set(outputs), []
        for n in reversed(nodes):
            if n.name in need:
                keep.append(n)
                need.update(n.inputs)
        nodes = keep[::-1]
        chain = len(outputs) == 1 and nodes[-1].name == outputs[0] and all(
            n.module is not None and n.inputs == [nodes[i - 1].name if i else INPUT]
            for i, n in enumerate(nodes))
        if chain:
            return Sequential([(n.name, n.module) for n in nodes])
        return Graph([(n.name, n.inputs, n.module) for n in nodes],
                     outputs[0] if len(outputs) == 1 else outputs)


def _fold_blocks(nodes, outputs, builder):
    """Replace every ``relu(main(x) + shortcut(x))`` that is a ResNet BasicBlock by one;
    returns the nodes and the (renamed) outputs."""
    outputs = list(outputs)
    while True:
        uses = {}
        for n in nodes:
            for v in n.inputs:
                uses[v] = uses.get(v, 0) + 1
        for output in outputs:
            uses[output] = uses.get(output, 0) + 1
        byname = {n.name: n for n in nodes}

        def trace(v):
            path = []
            while v != INPUT and uses.get(v) == 1 and byname[v].module is not None \
                    and len(byname[v].inputs) == 1:
                path.insert(0, byname[v])
                v = byname[v].inputs[0]
            return v, path

        for a in nodes:
            if a.module is not None or len(a.inputs) != 2 or uses.get(a.name) != 1 or a.name in outputs:
                continue
            relu = next(n for n in nodes if a.name in n.inputs)
            if type(relu.module) is not ReLU:
                continue
            (x0, p0), (x1, p1) = trace(a.inputs[0]), trace(a.inputs[1])
            if x0 != x1:
                continue
            for main, short in ((p0, p1), (p1, p0)):
                block = _match_block(main, short)
                if block is not None:
                    break
            else:
                continue
            parts = main + short + [a, relu]
            builder._names.difference_update(p.name for p in parts)   # their names are free again
            name = builder.unique(_common_scope([p.raw for p in parts]) or "block")
            new = _Node(name, name, [x0], block)
            gone = {id(p) for p in parts}
            out = []
            for n in nodes:
                if n is relu:
                    out.append(new)
                elif id(n) not in gone:
                    n.inputs = [name if v == relu.name else v for v in n.inputs]
                    out.append(n)
            outputs = [name if o == relu.name else o for o in outputs]
            nodes = out
            break
        else:
            return nodes, outputs


def _common_scope(raws):
    """The longest dotted or slashed scope shared by all ``raws`` ("layer1.0" of "layer1.0.conv1", ...)."""
    prefix = os.path.commonprefix(raws)
    if not all(len(r) == len(prefix) or r[len(prefix)] in "./" for r in raws):
        prefix = prefix[:max(prefix.rfind("/"), prefix.rfind("."), 0)]
    return prefix.strip("./")


def _match_block(main, short):
    """A BasicBlock equal to ``main`` (conv-bn-relu-conv-bn) plus ``short`` (none or conv-bn), or None.

    The candidate block's own structure says what it holds, so the block layout is known in
    one place (:class:`~tabconv_np.blocks.BasicBlock`).
    """
    mods = [n.module for n in main]
    smods = [n.module for n in short]
    if not mods or type(mods[0]) is not Conv2d or mods[0].stride[0] != mods[0].stride[1]:
        return None
    c1 = mods[0]
    bn = any(isinstance(m, BatchNorm2d) for m in mods)
    eps = next((m.eps for m in mods if isinstance(m, BatchNorm2d)), 1e-5)
    block = BasicBlock(c1.in_channels, c1.out_channels, c1.stride[0], eps, batchnorm=bn)
    node = block.structure()
    short_items = list(node.shortcut[0][1].structure().items) if node.shortcut else []
    if len(node.main) != len(mods) or len(short_items) != len(smods):
        return None
    if any(_config_key(want) != _config_key(got)
           for (_, want), got in zip(list(node.main) + short_items, mods + smods)):
        return None
    main_items = tuple((n, m) for (n, _), m in zip(node.main, mods))
    shortcut = ()
    if smods:
        shortcut = ((node.shortcut[0][0], Sequential([(n, m) for (n, _), m in zip(short_items, smods)])),)
    return BasicBlock.rebuild(Residual(main_items, shortcut, node.act), block)


# --- reading a spec ---------------------------------------------------------------------------
def load_spec(spec):
    """A spec dict from a dict, a JSON string or a path to a JSON file."""
    if isinstance(spec, dict):
        return spec
    text = spec
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and not spec.lstrip().startswith("{")):
        try:
            with open(regular_file(spec, ConfigError), encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the spec file {os.fspath(spec)}: {e}") from None
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"the spec is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise ConfigError("the spec must be a JSON object with 'input' and 'layers'")
    return spec


class _State:
    """The state dict seen by a spec: lookups by ``key.param`` that remember what was used."""

    def __init__(self, state, where):
        self.state, self.where, self.used = state, where, set()

    def get(self, key, param, ndim=None, required=True):
        full = f"{key}.{param}"
        if full not in self.state:
            if not required:
                return None
            near = [k for k in self.state if k.startswith(f"{key}.")] or list(self.state)[:6]
            raise ShapeError(f"{self.where}: the weights have no tensor {full!r} (nearby keys: "
                             f"{', '.join(near[:6])})")
        v = np.asarray(self.state[full])
        if v.dtype.kind not in "fiu":
            raise ShapeError(f"{self.where}: tensor {full!r} has dtype {v.dtype}, expected numbers")
        if ndim is not None and v.ndim != ndim:
            raise ShapeError(f"{self.where}: tensor {full!r} has shape {v.shape}, expected {ndim} "
                             f"dimensions")
        self.used.add(full)
        return v.astype(np.float32)


def _expect(key, param, found, expected):
    if tuple(found) != tuple(expected):
        raise ShapeError(f"tensor '{key}.{param}': expected shape {tuple(expected)}, found {tuple(found)}")


def make_conv(st, key, in_shape, stride=1, padding=0, dilation=1, groups=1, where=""):
    """A Conv2d filled from ``<key>.weight`` / ``<key>.bias`` for input ``in_shape`` (C, H, W)."""
    w = st.get(key, "weight", 4)
    b = st.get(key, "bias", 1, required=False)
    stride, dilation = _pair(stride, "stride", where), _pair(dilation, "dilation", where)
    if groups == "depthwise" and len(in_shape) == 3:
        groups = in_shape[0]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ConfigError(f"{where}: groups must be a positive int, got {groups!r}")
    if len(in_shape) != 3:
        raise ShapeError(f"{where}: conv '{key}' needs an image input (C, H, W), got {in_shape}")
    c_out, c_in_g, kh, kw = w.shape
    _expect(key, "weight", (c_out, c_in_g * groups), (c_out, in_shape[0]))
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ConfigError(f"{where}: padding must be an int, a list, 'same' or 'valid', got {padding!r}")
        pads = same_padding(in_shape[1:], (kh, kw), stride, dilation) if padding == "same" else (0,) * 4
    elif isinstance(padding, (list, tuple)) and len(padding) == 4:
        pads = tuple(padding)
    else:
        ph, pw = _pair(padding, "padding", where)
        pads = (ph, ph, pw, pw)
    if any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 0 for p in pads):
        raise ConfigError(f"{where}: bad padding {padding!r}")
    if b is not None:
        _expect(key, "bias", b.shape, (c_out,))
    conv = Conv2d(in_shape[0], c_out, (kh, kw), stride, simple_padding(pads), dilation, groups,
                  bias=b is not None)
    conv.params["weight"][...] = w
    if b is not None:
        conv.params["bias"][...] = b
    return conv


def make_bn(st, key, channels, eps):
    mean = st.get(key, "running_mean", 1)
    _expect(key, "running_mean", mean.shape, (channels,))
    bn = BatchNorm2d(channels, eps)
    bn.params["running_mean"][...] = mean
    for p in ("running_var", "weight", "bias"):
        v = st.get(key, p, 1, required=p == "running_var")
        if v is not None:
            _expect(key, p, v.shape, (channels,))
            bn.params[p][...] = v
    return bn


def make_linear(st, key, in_features, order_from=None):
    """A Linear from ``<key>.weight`` (out, in).

    ``order_from`` = ``((C, H, W), order)``: the input is a map flattened in ``order`` (a
    permutation of ``"chw"``, e.g. ``"hwc"`` for Keras); the rows are permuted to the C, H, W
    order tabconv_np's Flatten gives.
    """
    w = st.get(key, "weight", 2)
    b = st.get(key, "bias", 1, required=False)
    _expect(key, "weight", w.shape[1:], (in_features,))
    if order_from is not None and order_from[1] != "chw":
        dims = dict(zip("chw", order_from[0]))
        order = order_from[1]
        w = w.reshape((-1,) + tuple(dims[a] for a in order))
        w = w.transpose((0,) + tuple(1 + order.index(a) for a in "chw")).reshape(w.shape[0], -1)
    lin = Linear(w.shape[1], w.shape[0], bias=b is not None)
    lin.params["weight"][...] = w
    if b is not None:
        _expect(key, "bias", b.shape, (w.shape[0],))
        lin.params["bias"][...] = b
    return lin


def _opt(entry, name, default, where):
    v = entry.get(name, default)
    if v is None:
        raise ConfigError(f"{where}: '{name}' may not be null")
    return v


def _concat_axis(entry, where):
    """A concat's per-image ``axis`` (default 0, the channels)."""
    axis = entry.get("axis", 0)
    if isinstance(axis, bool) or not isinstance(axis, int) or axis < 0:
        raise ConfigError(f"{where}: 'axis' must be a per-image axis >= 0 (0: channels), got {axis!r}")
    return axis


#: Parameter-free kinds: kind -> layer from the spec entry.
_SIMPLE = {
    "leakyrelu": lambda e: LeakyReLU(float(e.get("alpha", 0.01))),
    "sigmoid": lambda e: Sigmoid(),
    "tanh": lambda e: Tanh(),
    "hardsigmoid": lambda e: HardSigmoid(float(e.get("alpha", 1 / 6)), float(e.get("beta", 0.5))),
    "hardswish": lambda e: HardSwish(),
    "softmax": lambda e: Softmax(int(e.get("axis", 0))),
    "gmp": lambda e: GlobalMaxPool2d(),
    "lrn": lambda e: LRN(int(e.get("size", 5)), float(e.get("alpha", 1e-4)), float(e.get("beta", 0.75)),
                         float(e.get("bias", 1.0))),
}


def build_from_spec(spec, state, input_shape=None, channels_last=None, default_eps=1e-5, meta=None):
    """A :class:`~tabconv_np.network.Network` from a spec (see the module docstring) and a state dict.

    Parameters
    ----------
    spec : dict, JSON string or path
    state : dict of name -> array
        PyTorch-convention weights (conv OIHW, linear (out, in), BN
        ``weight/bias/running_mean/running_var``).
    input_shape : (C, H, W), optional
        Overrides the spec's ``input``.
    channels_last : bool, optional
        Overrides the spec's ``channels_last``.
    default_eps : float
        Batch-norm epsilon where a ``bn`` layer gives none.
    meta : dict, optional
        Extra network metadata.
    """
    spec = load_spec(spec)
    if not isinstance(spec.get("layers"), list) or not spec["layers"]:
        raise ConfigError("the spec needs a non-empty 'layers' list")
    shape = input_shape if input_shape is not None else spec.get("input")
    if shape is None:
        raise ConfigError("the spec has no 'input' shape [C, H, W]; add one or pass --input CxHxW")
    try:
        shape = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"the input shape must be [C, H, W], got {spec.get('input')!r:.60}")
    if channels_last is None:
        channels_last = bool(spec.get("channels_last", False))
    st = _State(clean_state(state), "spec")
    b = Builder(shape)
    for i, entry in enumerate(spec["layers"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise ConfigError(f"spec layer {i}: must be an object with a 'type', got {entry!r:.80}")
        kind = _ALIASES.get(entry["type"].lower().replace("_", ""))
        where = f"spec layer {i} ({entry['type']})"
        st.where = where
        if kind is None:
            raise ConfigError(f"{where}: unknown layer type; known: {', '.join(sorted(set(_ALIASES.values())))}")
        key = entry.get("key")
        if kind in ("conv", "bn", "linear", "basicblock", "prelu") and not isinstance(key, str):
            raise ConfigError(f"{where}: needs a 'key' naming its weights, e.g. \"features.0\"")
        inputs = entry.get("inputs")
        if inputs is not None and (not isinstance(inputs, list)
                                   or not all(isinstance(v, str) for v in inputs)):
            raise ConfigError(f"{where}: 'inputs' must be a list of layer names")
        raw = entry.get("name") or key or f"{kind}{i}"
        if entry.get("name") and entry["name"] in b.aliases:
            raise ConfigError(f"{where}: the name {entry['name']!r} is used twice")
        inp = None
        if inputs is not None and kind not in _JOINS:
            if len(inputs) != 1:
                raise ConfigError(f"{where}: takes exactly one input, got {inputs}")
            inp = _resolve(b, inputs[0], where)
        if kind in _JOINS:
            if inputs is None or len(inputs) < 2:
                raise ConfigError(f"{where}: '{kind}' needs 'inputs': [two or more layer names]")
            ins = [_resolve(b, v, where) for v in inputs]
            if kind == "add":
                node = b.add(raw, ins)
            else:
                m = Concat(_concat_axis(entry, where)) if kind == "concat" else Binary("mul")
                node = b.join(raw, m, ins)
        elif kind == "identity":
            node = inp if inp is not None else b.last
            b.last = node
        else:
            node = _spec_layer(kind, entry, key, st, b, inp, raw, where, channels_last, default_eps)
        if entry.get("name"):
            b.aliases[str(entry["name"])] = node
    outputs = spec.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not outputs or not all(isinstance(v, str) for v in outputs):
            raise ConfigError("the spec's 'outputs' must be a list of layer names")
        outputs = [_resolve(b, v, "spec outputs") for v in outputs]
    body = b.body(outputs if outputs is None or len(outputs) > 1 else outputs[0])
    unused = [k for k in st.state if k not in st.used]
    if unused:
        warnings.warn(f"{len(unused)} tensor(s) of the weights are not used by the spec: "
                      f"{', '.join(unused[:6])}{' ...' if len(unused) > 6 else ''}", stacklevel=2)
    return Network(body, shape, spec.get("preprocess"), meta=dict(meta or {}))


def _resolve(b, name, where):
    if name == INPUT:
        return INPUT
    node = b.aliases.get(name, name)
    if node not in b.shapes or node == INPUT:
        raise ConfigError(f"{where}: input {name!r} is not a layer named before it")
    return node


def _spec_layer(kind, e, key, st, b, inp, raw, where, channels_last, default_eps):
    inp = b.last if inp is None else inp
    in_shape = b.shape(inp)
    if kind == "conv":
        m = make_conv(st, key, in_shape, _opt(e, "stride", 1, where), _opt(e, "padding", 0, where),
                      _opt(e, "dilation", 1, where), _opt(e, "groups", 1, where), where)
    elif kind == "bn":
        if len(in_shape) != 3:
            raise ShapeError(f"{where}: batch norm '{key}' needs an image input (C, H, W), got {in_shape}")
        m = make_bn(st, key, in_shape[0], float(_opt(e, "eps", default_eps, where)))
    elif kind == "linear":
        if len(in_shape) == 3:
            inp = b.layer(f"flatten_{raw}", Flatten(), inp)
            b.flat_src[inp] = (in_shape, "hwc" if channels_last else "chw")
            in_shape = b.shape(inp)
        m = make_linear(st, key, in_shape[0], _flatten_source(b, inp))
    elif kind == "relu":
        m = ReLU()
    elif kind in ("relu6", "clip"):
        m = Clip(_opt(e, "min", 0.0, where), e.get("max", 6.0))
    elif kind in ("maxpool", "avgpool"):
        k = _pair(_opt(e, "kernel", 2, where), "kernel", where)
        s = _pair(e.get("stride") or k, "stride", where)
        pad = _opt(e, "padding", 0, where)
        if len(in_shape) != 3:
            raise ShapeError(f"{where}: pooling needs an image input (C, H, W), got {in_shape}")
        include = bool(e.get("count_include_pad", True))
        if pad == "same":                 # TensorFlow's rule; Keras' average excludes the padding
            pad, include = same_padding(in_shape[1:], k, s), False
        elif pad == "valid":
            pad = 0
        elif not (isinstance(pad, list) and len(pad) == 4):
            pad = _pair(pad, "padding", where)
        extra = {"count_include_pad": include} if kind == "avgpool" else {}
        try:
            m = (MaxPool2d if kind == "maxpool" else AvgPool2d)(k, s, pad, bool(e.get("ceil_mode", False)),
                                                                **extra)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    elif kind == "gap":
        m = GlobalAvgPool2d()
    elif kind in _SIMPLE:
        try:
            m = _SIMPLE[kind](e)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
    elif kind == "prelu":
        w = st.get(key, "weight", 1)
        if w.size not in (1, in_shape[0]):
            raise ShapeError(f"tensor '{key}.weight': expected shape (1,) or ({in_shape[0]},), found {w.shape}")
        m = PReLU(w.size)
        m.params["weight"][...] = w
    elif kind == "pad":
        p = _opt(e, "padding", 0, where)
        p = list(p) if isinstance(p, (list, tuple)) and len(p) == 4 else \
            [v for v in _pair(p, "padding", where) for _ in (0, 1)]
        m = Pad(p, e.get("mode", "constant"), float(e.get("value", 0.0)))
    elif kind == "flatten":
        order = e.get("order", "hwc" if channels_last else "chw")
        if not isinstance(order, str) or sorted(order) != ["c", "h", "w"]:
            raise ConfigError(f"{where}: flatten 'order' must be a permutation of 'chw' ('chw', "
                              f"'hwc', 'whc', ...), got {order!r}")
        node = b.layer(raw, Flatten(), inp)
        if len(in_shape) == 3:
            b.flat_src[node] = (in_shape, order)
        return node
    elif kind == "dropout":
        m = Dropout(float(e.get("p", e.get("rate", 0.5)) or 0.0))
    elif kind == "basicblock":
        m = make_basic_block(st, key, in_shape, _opt(e, "stride", 1, where),
                             float(_opt(e, "eps", default_eps, where)), where)
    else:  # pragma: no cover - _ALIASES and this function list the same kinds
        raise ConfigError(f"{where}: unsupported layer type")
    return b.layer(raw, m, inp)


def _flatten_source(b, node):
    """``((C, H, W), order)`` of the flatten feeding ``node`` through no-op layers, or None."""
    byname = {n.name: n for n in b.nodes}
    while node in byname:
        if node in b.flat_src:
            return b.flat_src[node]
        n = byname[node]
        if not isinstance(n.module, Dropout):
            return None
        node = n.inputs[0]
    return None


def make_basic_block(st, key, in_shape, stride, eps, where):
    """A ResNet BasicBlock from ``<key>.conv1`` ... (``downsample`` or ``shortcut``)."""
    if len(in_shape) != 3:
        raise ShapeError(f"{where}: a basic block needs an image input (C, H, W), got {in_shape}")
    w = st.get(f"{key}.conv1", "weight", 4)
    bn = f"{key}.bn1.running_mean" in st.state
    block = BasicBlock(in_shape[0], w.shape[0], int(stride), eps, batchnorm=bn)
    short = "shortcut" if f"{key}.shortcut.0.weight" in st.state else "downsample"
    for name, param in block.state_dict().items():
        src = name.replace("downsample.", f"{short}.", 1)
        k, p = src.rsplit(".", 1)
        v = st.get(f"{key}.{k}", p)
        _expect(f"{key}.{k}", p, v.shape, param.shape)
        param[...] = v
    return block
