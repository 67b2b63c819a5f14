"""ONNX graphs -> tabconv_np networks, read with the ``onnx`` package alone.

Supported operators (NCHW, float):

=====================  ==========================================================
Conv                   any strides, pads, dilations, groups; ``auto_pad`` too
BatchNormalization     inference form, ``epsilon`` honoured
Relu, Clip             Clip(min=0, max=none) is ReLU; other bounds a ``Clip`` layer
MaxPool, AveragePool   symmetric pads only; ``ceil_mode`` only where it changes
                       nothing; AveragePool with pads needs ``count_include_pad=1``
GlobalAveragePool      keeps a 1x1 map, as in ONNX
Gemm                   constant B (``transB`` either way), optional C; alpha/beta
MatMul (+ Add)         constant right operand; an Add of a constant after it is its bias
Add                    element-wise sum of two computed tensors (residual connections)
Flatten, Reshape       to ``(N, -1)`` only
Dropout, Identity      pass-through
Constant               constant inputs of the above
Softmax                only as the graph's output: dropped (a warning says so),
                       the network returns logits (same argmax)
=====================  ==========================================================

Residual graphs: ``relu(main(x) + shortcut(x))`` with the layer pattern of a
ResNet basic block becomes a ``BasicBlock`` (with or without batch norm --
exporters often fold BN into the convs), other graphs a
:class:`~tabconv_np.blocks.Graph`.  Any other operator raises
:class:`~tabconv_np.errors.ConfigError` naming the op type and the node.
"""
import math
import os
import warnings

import numpy as np

from ..errors import ConfigError, ShapeError, TabConvError, WeightFileError
from ..blocks import INPUT
from ..layers import (AvgPool2d, BatchNorm2d, Clip, Conv2d, Flatten, GlobalAvgPool2d, Linear,
                      MaxPool2d, ReLU)
from ..network import Network
from .formats import read_source
from .spec import Builder, same_padding, simple_padding

SUPPORTED = ("Conv", "BatchNormalization", "Relu", "Clip", "MaxPool", "AveragePool",
             "GlobalAveragePool", "Gemm", "MatMul", "Add", "Flatten", "Reshape", "Dropout",
             "Identity", "Constant", "Softmax")


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ConfigError("reading ONNX files needs the 'onnx' package: pip install onnx "
                          "(or pip install 'tabconv_np[onnx]')") from None
    return onnx, numpy_helper


def _raw_name(node, index):
    """A readable layer name from an ONNX node name like ``/layer1/layer1.0/conv1/Conv``."""
    name = node.name or f"{node.op_type}_{index}"
    if "/" not in name:
        return name
    parts = [p for p in name.split("/") if p]
    if len(parts) > 1 and parts[-1].split("_")[0] == node.op_type:
        parts = parts[:-1]
    out = []
    for p in parts:
        if out and p.startswith(out[-1] + "."):
            out[-1] = p
        else:
            out.append(p)
    return ".".join(out) or name


class _Importer:
    def __init__(self, model, where, input_shape, numpy_helper, onnx):
        self.where, self.nh, self.onnx = where, numpy_helper, onnx
        g = model.graph
        self.graph = g
        self.consts = {}
        for t in g.initializer:
            self.consts[t.name] = self._array(t, f"initializer {t.name!r}")
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ConfigError(f"{where}: the graph has {len(inputs)} inputs ({[i.name for i in inputs]}); "
                              f"only single-input models are supported")
        self.input_name = inputs[0].name
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in inputs[0].type.tensor_type.shape.dim]
        if input_shape is None:
            if len(dims) != 4 or None in dims[1:]:
                raise ConfigError(f"{where}: the input {self.input_name!r} has shape "
                                  f"{['?' if d is None else d for d in dims]}; give its C x H x W "
                                  f"with --input (e.g. --input 1x28x28)")
            input_shape = tuple(dims[1:])
        elif len(dims) == 4 and any(d is not None and d != s for d, s in zip(dims[1:], input_shape)):
            raise ShapeError(f"{where}: --input {input_shape} contradicts the model's input shape "
                             f"{dims[1:]}")
        if len(g.output) != 1:
            raise ConfigError(f"{where}: the graph has {len(g.output)} outputs; only single-output "
                              f"models are supported")
        self.b = Builder(input_shape)
        self.values = {self.input_name: INPUT}   # ONNX value name -> builder node name
        self.uses = {}
        for n in g.node:
            for v in n.input:
                self.uses[v] = self.uses.get(v, 0) + 1
        self.dropped_softmax = False

    # -- helpers ---------------------------------------------------------------------------
    def _array(self, tensor, what):
        try:
            a = self.nh.to_array(tensor)
        except Exception as e:
            raise WeightFileError(f"{self.where}: cannot read {what}: {type(e).__name__}: {e}") from None
        if a.dtype.kind not in "fiub":
            raise WeightFileError(f"{self.where}: {what} has dtype {a.dtype}, expected numbers")
        return np.array(a)

    def attrs(self, node):
        out = {}
        for a in node.attribute:
            try:
                v = self.onnx.helper.get_attribute_value(a)
            except Exception as e:
                raise WeightFileError(f"{self.where}: node {node.name!r}: bad attribute {a.name!r}: {e}") from None
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, self.onnx.TensorProto):
                v = self._array(v, f"attribute {a.name!r} of node {node.name!r}")
            out[a.name] = v
        return out

    def value(self, node, name):
        if name not in self.values:
            if name in self.consts:
                raise ConfigError(f"{self.where}: node {node.name!r} ({node.op_type}) applies to a constant "
                                  f"{name!r}; only computed tensors are supported there")
            raise ConfigError(f"{self.where}: node {node.name!r} ({node.op_type}) uses {name!r}, "
                              f"which is not computed before it (graph not sorted, or an unsupported op)")
        return self.values[name]

    def const(self, node, name, what, optional=False):
        if name == "" and optional:
            return None
        if name not in self.consts:
            if optional and name not in self.values:
                return None
            raise ConfigError(f"{self.where}: node {node.name!r} ({node.op_type}): the {what} {name!r} "
                              f"must be a constant (initializer)")
        return self.consts[name].astype(np.float32) if self.consts[name].dtype.kind == "f" \
            else self.consts[name]

    def fail(self, node, why):
        raise ConfigError(f"{self.where}: node {node.name!r} ({node.op_type}): {why}")

    # -- the conversion --------------------------------------------------------------------
    def run(self):
        nodes = list(self.graph.node)
        out_name = self.graph.output[0].name
        for i, node in enumerate(nodes):
            op = node.op_type
            handler = getattr(self, f"op_{op}", None)
            if handler is None or node.domain not in ("", "ai.onnx"):
                raise ConfigError(f"{self.where}: unsupported ONNX op {op!r} (node {node.name!r}); "
                                  f"supported: {', '.join(SUPPORTED)}")
            result = handler(node, _raw_name(node, i), out_name)
            if result is not None and node.output:
                self.values[node.output[0]] = result
        if out_name not in self.values or self.values[out_name] == INPUT:
            raise ConfigError(f"{self.where}: the graph output {out_name!r} is not computed by "
                              f"supported layers")
        return self.b.body(self.values[out_name])

    def _layer(self, node, raw, module, inp=None):
        return self.b.layer(raw, module, self.value(node, node.input[0]) if inp is None else inp)

    def op_Conv(self, node, raw, _):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        w = self.const(node, node.input[1], "weight")
        bias = self.const(node, node.input[2], "bias", optional=True) if len(node.input) > 2 else None
        in_shape = self.b.shape(x)
        if w.ndim != 4:
            self.fail(node, f"only 2-d convolutions are supported (weight shape {w.shape})")
        if len(in_shape) != 3:
            self.fail(node, f"needs an image input, got shape {in_shape}")
        group = int(a.get("group", 1))
        c_out, c_in_g, kh, kw = w.shape
        if c_in_g * group != in_shape[0]:
            raise ShapeError(f"{self.where}: node {node.name!r}: weight {node.input[1]!r} has shape "
                             f"{w.shape} (groups {group}), expected {(c_out, in_shape[0] // max(group, 1), kh, kw)} "
                             f"for input of shape {in_shape}")
        if list(a.get("kernel_shape", [kh, kw])) != [kh, kw]:
            self.fail(node, f"kernel_shape {a['kernel_shape']} differs from the weight's {w.shape}")
        stride = tuple(a.get("strides", [1, 1]))
        dil = tuple(a.get("dilations", [1, 1]))
        pads = self._pads(node, a, in_shape, (kh, kw), stride, dil)
        if bias is not None and bias.shape != (c_out,):
            raise ShapeError(f"{self.where}: node {node.name!r}: bias {node.input[2]!r} has shape "
                             f"{bias.shape}, expected {(c_out,)}")
        conv = Conv2d(in_shape[0], c_out, (kh, kw), stride, simple_padding(pads), dil, group,
                      bias=bias is not None)
        conv.params["weight"][...] = w
        if bias is not None:
            conv.params["bias"][...] = bias
        return self._layer(node, raw, conv, x)

    def _pads(self, node, a, in_shape, kernel, stride, dil=(1, 1)):
        auto = a.get("auto_pad", "NOTSET")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            t, b, l, r = same_padding(in_shape[1:], kernel, stride, dil)
            return (t, b, l, r) if auto == "SAME_UPPER" else (b, t, r, l)
        if auto == "VALID":
            return (0, 0, 0, 0)
        if auto != "NOTSET":
            self.fail(node, f"unknown auto_pad {auto!r}")
        p = list(a.get("pads", [0, 0, 0, 0]))
        if len(p) != 4 or min(p) < 0:
            self.fail(node, f"pads {p} must be 4 non-negative ints")
        return (p[0], p[2], p[1], p[3])   # ONNX: h_begin, w_begin, h_end, w_end

    def op_BatchNormalization(self, node, raw, _):
        a = self.attrs(node)
        if a.get("training_mode", 0):
            self.fail(node, "training_mode=1 is not an inference graph")
        x = self.value(node, node.input[0])
        shape = self.b.shape(x)
        if len(shape) != 3:
            self.fail(node, f"only batch norm of images is supported, input shape {shape}")
        bn = BatchNorm2d(shape[0], float(a.get("epsilon", 1e-5)))
        for name, param in zip(node.input[1:5], ("weight", "bias", "running_mean", "running_var")):
            v = self.const(node, name, param)
            if v.shape != (shape[0],):
                raise ShapeError(f"{self.where}: node {node.name!r}: {param} {name!r} has shape {v.shape}, "
                                 f"expected {(shape[0],)}")
            bn.params[param][...] = v
        return self._layer(node, raw, bn, x)

    def op_Relu(self, node, raw, _):
        return self._layer(node, raw, ReLU())

    def op_Clip(self, node, raw, _):
        a = self.attrs(node)
        lo, hi = a.get("min"), a.get("max")
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node, node.input[1], "min").reshape(-1)[0])
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node, node.input[2], "max").reshape(-1)[0])
        lo = -math.inf if lo is None else float(lo)
        hi = None if hi is None or math.isinf(hi) else float(hi)
        if not math.isfinite(lo):
            self.fail(node, "Clip without a lower bound is not supported")
        m = ReLU() if lo == 0 and hi is None else Clip(lo, hi)
        return self._layer(node, raw, m)

    def _pool(self, node, raw, cls):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        shape = self.b.shape(x)
        if len(shape) != 3:
            self.fail(node, f"needs an image input, got shape {shape}")
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
            self.fail(node, "the Indices output is not supported")
        k = tuple(a.get("kernel_shape", ()))
        if len(k) != 2:
            self.fail(node, f"kernel_shape {k} must have two entries")
        s = tuple(a.get("strides", [1, 1]))
        if tuple(a.get("dilations", [1, 1])) != (1, 1):
            self.fail(node, "dilated pooling is not supported")
        pads = self._pads(node, a, shape, k, s)
        if pads[0] != pads[1] or pads[2] != pads[3]:
            self.fail(node, f"asymmetric pads {pads} (top, bottom, left, right) are not supported")
        if cls is AvgPool2d and any(pads) and not a.get("count_include_pad", 0):
            self.fail(node, "average pooling with pads and count_include_pad=0 is not supported")
        if a.get("ceil_mode", 0):
            for n, kk, ss, p in zip(shape[1:], k, s, pads[::2]):
                span = n + 2 * p - kk
                if span >= 0 and span % ss:
                    self.fail(node, "ceil_mode=1 changes the output size here; export with ceil_mode=0")
        return self._layer(node, raw, cls(k, s, (pads[0], pads[2])), x)

    def op_MaxPool(self, node, raw, _):
        return self._pool(node, raw, MaxPool2d)

    def op_AveragePool(self, node, raw, _):
        return self._pool(node, raw, AvgPool2d)

    def op_GlobalAveragePool(self, node, raw, _):
        return self._layer(node, raw, GlobalAvgPool2d())

    def op_Flatten(self, node, raw, _):
        axis = self.attrs(node).get("axis", 1)
        if axis != 1:
            self.fail(node, f"only Flatten(axis=1) is supported, got axis={axis}")
        return self._layer(node, raw, Flatten())

    def op_Reshape(self, node, raw, _):
        x = self.value(node, node.input[0])
        target = [int(v) for v in self.const(node, node.input[1], "shape").reshape(-1)]
        n = int(np.prod(self.b.shape(x)))
        if len(target) != 2 or not (target[1] in (-1, n) and target[0] in (-1, 0, 1)) \
                and target != [-1, n]:
            self.fail(node, f"only reshapes to (N, -1) are supported, got shape {target}")
        return self._layer(node, raw, Flatten(), x)

    def _linear(self, node, raw, w, bias, x):
        shape = self.b.shape(x)
        if len(shape) != 1:
            self.fail(node, f"needs a flat input (N, features), got per-image shape {shape}; "
                            f"add a Flatten before it")
        if w.shape[1] != shape[0]:
            raise ShapeError(f"{self.where}: node {node.name!r}: weight {node.input[1]!r} gives "
                             f"{w.shape[1]} input features, expected {shape[0]}")
        lin = Linear(w.shape[1], w.shape[0], bias=bias is not None)
        lin.params["weight"][...] = w
        if bias is not None:
            lin.params["bias"][...] = bias
        return self._layer(node, raw, lin, x)

    def op_Gemm(self, node, raw, _):
        a = self.attrs(node)
        if a.get("transA", 0):
            self.fail(node, "transA=1 is not supported")
        x = self.value(node, node.input[0])
        w = self.const(node, node.input[1], "weight B")
        if w.ndim != 2:
            self.fail(node, f"B must be a matrix, got shape {w.shape}")
        w = (w if a.get("transB", 0) else w.T) * np.float32(a.get("alpha", 1.0))
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = self.const(node, node.input[2], "bias C") * np.float32(a.get("beta", 1.0))
            if c.size not in (1, w.shape[0]) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
                raise ShapeError(f"{self.where}: node {node.name!r}: C {node.input[2]!r} has shape "
                                 f"{c.shape}, expected ({w.shape[0]},)")
            bias = np.broadcast_to(c.reshape(-1), (w.shape[0],)).astype(np.float32)
        return self._linear(node, raw, np.ascontiguousarray(w, np.float32), bias, x)

    def op_MatMul(self, node, raw, _):
        x = self.value(node, node.input[0])
        w = self.const(node, node.input[1], "right operand")
        if w.ndim != 2:
            self.fail(node, f"the right operand must be a matrix, got shape {w.shape}")
        return self._linear(node, raw, np.ascontiguousarray(w.T, np.float32), None, x)

    def op_Add(self, node, raw, _):
        if len(node.input) != 2:
            self.fail(node, "Add needs two inputs")
        consts = [v for v in node.input if v in self.consts]
        if not consts:
            return self.b.add(raw, [self.value(node, v) for v in node.input])
        if len(consts) == 2:
            self.fail(node, "an Add of two constants is not supported")
        other = next(v for v in node.input if v not in self.consts)
        src = self.value(node, other)
        prev = next((n for n in self.b.nodes if n.name == src), None)
        if prev is None or not isinstance(prev.module, Linear) or "bias" in prev.module.params \
                or self.uses.get(other, 0) != 1:
            self.fail(node, "an Add of a constant is supported only as the bias of a MatMul")
        c = self.const(node, consts[0], "bias").reshape(-1)
        lin = prev.module
        if c.size not in (1, lin.out_features):
            raise ShapeError(f"{self.where}: node {node.name!r}: bias {consts[0]!r} has {c.size} values, "
                             f"expected {lin.out_features}")
        new = Linear(lin.in_features, lin.out_features, bias=True)
        new.params["weight"][...] = lin.params["weight"]
        new.params["bias"][...] = np.broadcast_to(c, (lin.out_features,))
        prev.module = new
        return src

    def op_Dropout(self, node, raw, _):
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
            self.fail(node, "the dropout mask output is not supported")
        return self.value(node, node.input[0])

    def op_Identity(self, node, raw, _):
        if node.input[0] in self.consts:
            self.consts[node.output[0]] = self.consts[node.input[0]]
            return None
        return self.value(node, node.input[0])

    def op_Constant(self, node, raw, _):
        a = self.attrs(node)
        if "value" not in a:
            self.fail(node, f"only tensor constants ('value') are supported, got {list(a)}")
        self.consts[node.output[0]] = np.asarray(a["value"])
        return None

    def op_Softmax(self, node, raw, out_name):
        if node.output[0] != out_name:
            self.fail(node, "Softmax is supported only as the graph's final output (it is dropped)")
        warnings.warn(f"{self.where}: the final Softmax is dropped; the network returns logits "
                      f"(same predicted classes)", stacklevel=4)
        self.dropped_softmax = True
        return self.value(node, node.input[0])


def _tensors(graph):
    """``(where, TensorProto)`` for every tensor in ``graph`` and its subgraphs: initializers,
    sparse initializers, tensor attributes of any node (``Constant`` included)."""
    stack = [("graph", graph)]
    while stack:
        where, g = stack.pop()
        for t in g.initializer:
            yield f"{where}: initializer {t.name!r}", t
        for sp in g.sparse_initializer:
            yield f"{where}: sparse initializer {sp.values.name!r}", sp.values
            yield f"{where}: sparse initializer {sp.values.name!r} (indices)", sp.indices
        for node in g.node:
            for a in node.attribute:
                at = f"{where}: node {node.name!r} ({node.op_type}) attribute {a.name!r}"
                sparse = list(a.sparse_tensors) + ([a.sparse_tensor] if a.HasField("sparse_tensor") else [])
                for t in ([a.t] if a.HasField("t") else []) + list(a.tensors) + \
                        [x for sp in sparse for x in (sp.values, sp.indices)]:
                    yield at, t
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    stack.append((f"{at} subgraph", sub))


def _refuse_external_data(graph, path):
    """Refuse any tensor whose data lives in another file (read relative to the current
    directory by onnx, so a model could pull in any file)."""
    for where, t in _tensors(graph):
        if t.data_location == 1 or len(t.external_data):   # TensorProto.EXTERNAL
            raise WeightFileError(f"{path}: {where} keeps its data in an external file; refused. "
                                  f"Re-save the model in one file: m = onnx.load(path) (next to its "
                                  f"data files), then onnx.save(m, 'one.onnx', "
                                  f"save_as_external_data=False)")


def import_onnx(path, input_shape=None, meta=None):
    """A :class:`~tabconv_np.network.Network` from the ONNX file at ``path``.

    Parameters
    ----------
    path : str or os.PathLike
    input_shape : (C, H, W), optional
        Needed when the model's input dimensions are symbolic.
    meta : dict, optional
        Extra network metadata.

    Raises
    ------
    ConfigError
        An unsupported operator (the message names the op type and the node),
        or the onnx package is missing.
    WeightFileError
        Not a readable ONNX file.
    ShapeError
        Weights of the wrong shape.
    """
    onnx, nh = _onnx()
    path = os.fspath(path)
    data = read_source(path)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:
        raise WeightFileError(f"{path}: not a readable ONNX model (truncated or corrupt?): "
                              f"{type(e).__name__}: {e}") from None
    if not model.HasField("graph") or not model.graph.node:
        raise WeightFileError(f"{path}: not an ONNX model (no graph)")
    _refuse_external_data(model.graph, path)
    try:
        imp = _Importer(model, path, input_shape, nh, onnx)
        body = imp.run()
    except TabConvError:
        raise
    except Exception as e:  # corrupt protobuf contents: wrong attribute types, odd values
        raise WeightFileError(f"{path}: cannot interpret the ONNX graph (corrupt?): "
                              f"{type(e).__name__}: {e}") from None
    meta = dict(meta or {})
    if imp.dropped_softmax:
        meta["dropped_softmax"] = True
    return Network(body, imp.b.input_shape, meta=meta)
