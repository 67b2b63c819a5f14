"""ONNX graphs -> tabconv_np networks, read with the ``onnx`` package alone.

Constants are evaluated at import time: every node whose inputs are all
constants (initializers, ``Constant`` nodes, or results of such nodes) is run
once by ``onnx.reference`` and its outputs become constants -- this covers
``ConstantOfShape``, ``Shape``/``Gather``/``Unsqueeze``/``Concat``/``Cast``
chains that compute reshape targets, and ``QuantizeLinear``/``DequantizeLinear``
wrapped around float weights.  ``Shape`` of a computed tensor is a constant too
(the batch size is taken as 1, so reshape targets computed from it keep the
batch axis first).

The operators supported on computed tensors (NCHW, float) are listed, with
what of each is supported, in :data:`OPERATORS` (the README's list is
generated from it by :func:`operators_markdown`).

Nodes are read in dependency order (the file's, when it is one; a cycle or a value no node
computes is refused naming the node).  Graphs with several outputs become a :class:`~tabconv_np.blocks.Graph` with several
outputs (``net(x)`` returns a tuple in the graph's order).  Residual graphs:
``relu(main(x) + shortcut(x))`` with the layer pattern of a ResNet basic block
becomes a ``BasicBlock`` (with or without batch norm -- exporters often fold BN
into the convs), chains a ``Sequential``, other graphs a ``Graph``.  Any other
operator raises :class:`~tabconv_np.errors.ConfigError` naming the op type,
the node (its name, or its index and op when unnamed) and the supported ops.
"""
import math
import os
import warnings

import numpy as np

from ..errors import ConfigError, ShapeError, TabConvError, WeightFileError
from ..activations import HardSigmoid, HardSwish, LeakyReLU, PReLU, Sigmoid, Softmax, Tanh
from ..blocks import INPUT
from ..joins import Binary, Concat, Scale
from ..layers import (LRN, AvgPool2d, BatchNorm2d, Clip, Conv2d, Flatten, GlobalAvgPool2d,
                      GlobalMaxPool2d, Linear, MaxPool2d, ReLU)
from ..network import Network
from ..reshapes import ChannelGather, Pad, Reshape, Transpose
from ..upsampling import ConvTranspose2d, Resize
from .formats import read_source
from .spec import Builder, same_padding, simple_padding

#: ``(ONNX ops, what is supported)``: the ops whose inputs may be computed tensors (every op is
#: evaluated at import when its inputs are all constants).
OPERATORS = (
    (("Conv",), "any strides, pads (asymmetric too), dilations, groups (depthwise, grouped); "
                "`auto_pad` too"),
    (("ConvTranspose",), "strides, pads, `output_padding`, dilations, groups"),
    (("BatchNormalization",), "inference form, `epsilon` honoured"),
    (("Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish"),
     "element-wise (`Clip(0, none)` is a ReLU, other bounds a `Clip` layer)"),
    (("Softmax",), "over any axis but the batch; as the only output of a graph it is dropped with a "
                   "warning (the network returns logits, same predictions)"),
    (("LRN",), "across channels"),
    (("MaxPool", "AveragePool"), "asymmetric pads, `ceil_mode`, `count_include_pad`"),
    (("GlobalAveragePool", "GlobalMaxPool"), "keep a 1x1 map, as in ONNX"),
    (("Gemm", "MatMul"), "constant right operand (`transB`, alpha, beta, C)"),
    (("Add", "Sub", "Mul", "Div"), "of two computed tensors (broadcasting, e.g. a squeeze-excite "
                                   "gate); with a scalar or per-channel constant: folded into the "
                                   "conv, linear, batch norm or scale before it when nothing else "
                                   "reads that, else a `Scale` layer"),
    (("Sum",), "of computed tensors of one shape"),
    (("Concat",), "any axis but the batch"),
    (("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"),
     "the batch axis kept first (a flatten in any order); a reshape-transpose-reshape channel "
     "shuffle becomes one channel gather"),
    (("Split", "Slice"), "along the channels"),
    (("Pad",), "spatial pads; constant, reflect or edge (a zero pad read only by a conv becomes its "
               "padding)"),
    (("Resize", "Upsample"), "nearest (every `nearest_mode`) and linear, with every coordinate mode "
                             "but `tf_crop_and_resize`; spatial scales or sizes"),
    (("Shape",), "of a computed tensor: a constant (batch size 1)"),
    (("Dropout", "Identity", "Cast"), "pass-through (Cast to float)"),
    (("Constant",), "tensor and number values"),
)

#: Every op name of :data:`OPERATORS`.
SUPPORTED = tuple(op for ops, _ in OPERATORS for op in ops)


def operators_markdown():
    """The README's table of supported ONNX operators, from :data:`OPERATORS`."""
    rows = ["| ONNX operators | supported |", "|---|---|"]
    rows += [f"| {', '.join(ops)} | {note} |" for ops, note in OPERATORS]
    return "\n".join(rows)


#: Element-wise activations without attributes beyond these: ONNX op -> layer factory.
_ACTIVATIONS = {
    "Relu": lambda a: ReLU(),
    "Sigmoid": lambda a: Sigmoid(),
    "Tanh": lambda a: Tanh(),
    "HardSwish": lambda a: HardSwish(),
    "LeakyRelu": lambda a: LeakyReLU(float(a.get("alpha", 0.01))),
    "HardSigmoid": lambda a: HardSigmoid(float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))),
}

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}


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


def node_label(node, index):
    """How messages name a node: ``'name'``, or ``#index (an unnamed Op)``."""
    return repr(node.name) if node.name else f"#{index} (an unnamed {node.op_type})"


def _affine(module, scale, shift):
    """A copy of ``module`` (Conv2d, Linear, BatchNorm2d or Scale) followed by ``x * scale +
    shift`` per output channel, or None for other layers (computed in float64)."""
    s64, t64 = scale.astype(np.float64), shift.astype(np.float64)
    if isinstance(module, (Conv2d, Linear)):
        n = module.out_channels if isinstance(module, Conv2d) else module.out_features
        if isinstance(module, Conv2d):
            new = Conv2d(module.in_channels, n, module.kernel_size, module.stride, module.padding,
                         module.dilation, module.groups, bias=True, method=module.method)
        else:
            new = Linear(module.in_features, n, bias=True)
        s, t = np.broadcast_to(s64, (n,)), np.broadcast_to(t64, (n,))
        w = module.params["weight"].astype(np.float64)
        new.params["weight"][...] = w * s.reshape((n,) + (1,) * (w.ndim - 1))
        b = module.params["bias"].astype(np.float64) if "bias" in module.params else 0.0
        new.params["bias"][...] = b * s + t
        return new
    if isinstance(module, BatchNorm2d):
        new = BatchNorm2d(module.num_features, module.eps)
        new.load_state_dict(module.state_dict())
        new.params["weight"][...] = module.params["weight"] * s64
        new.params["bias"][...] = module.params["bias"] * s64 + t64
        return new
    if isinstance(module, Scale):
        n = max(module.params["weight"].size, s64.size, t64.size)
        new = Scale(n)
        new.params["weight"][...] = module.params["weight"] * s64
        new.params["bias"][...] = module.params["bias"] * s64 + t64
        return new
    return None


class _Importer:
    def __init__(self, model, where, input_shape, numpy_helper, onnx):
        self.where, self.nh, self.onnx = where, numpy_helper, onnx
        g = model.graph
        self.graph, self.model = g, model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
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
        if not len(g.output):
            raise ConfigError(f"{where}: the graph has no outputs")
        self.out_names = [o.name for o in g.output]
        self.b = Builder(input_shape)
        self.values = {self.input_name: INPUT}   # ONNX value name -> builder node name
        self.uses = {}
        for n in g.node:
            for v in n.input:
                self.uses[v] = self.uses.get(v, 0) + 1
        for v in self.out_names:
            self.uses[v] = self.uses.get(v, 0) + 1
        self.left = dict(self.uses)     # readers still to come, by value name
        self.dropped_softmax = False
        self.index, self.node = 0, None

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

    def _label(self, node):
        return node_label(node, self.index)

    def value(self, node, name):
        if name not in self.values:
            if name in self.consts:
                raise ConfigError(f"{self.where}: node {self._label(node)} ({node.op_type}) applies to a "
                                  f"constant {name!r} where a computed tensor is expected")
            raise ConfigError(f"{self.where}: node {self._label(node)} ({node.op_type}) uses {name!r}, "
                              f"which is not computed before it (graph not sorted, or an unsupported op)")
        return self.values[name]

    def const(self, node, name, what, optional=False):
        if name == "" and optional:
            return None
        if name not in self.consts:
            if optional and name not in self.values:
                return None
            raise ConfigError(f"{self.where}: node {self._label(node)} ({node.op_type}): the {what} "
                              f"{name!r} must be a constant (initializer)")
        return self.consts[name].astype(np.float32) if self.consts[name].dtype.kind == "f" \
            else self.consts[name]

    def ints(self, node, pos, attr, what):
        """Integer list from input ``pos`` (newer opsets) or attribute ``attr`` (older), or None."""
        if len(node.input) > pos and node.input[pos]:
            return [int(v) for v in self.const(node, node.input[pos], what).reshape(-1)]
        a = self.attrs(node).get(attr)
        return None if a is None else [int(v) for v in np.atleast_1d(a)]

    def fail(self, node, why):
        raise ConfigError(f"{self.where}: node {self._label(node)} ({node.op_type}): {why}")

    def shape(self, value):
        return self.b.shape(value)

    def axis(self, node, axis, shape):
        """ONNX axis (batch included, may be negative) -> per-image axis; the batch axis refused."""
        rank = len(shape) + 1
        a = int(axis) + rank if int(axis) < 0 else int(axis)
        if not 1 <= a < rank:
            self.fail(node, f"axis {axis} is the batch axis or out of range for rank {rank}")
        return a - 1

    # -- constants -------------------------------------------------------------------------
    def _quant(self, node):
        """(De)QuantizeLinear on constants, per tensor or per axis (the reference evaluator knows
        only opset 19+ forms)."""
        x, scale = self.consts[node.input[0]], self.consts[node.input[1]].astype(np.float32)
        zp = self.consts[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * x.ndim
            shape[int(self.attrs(node).get("axis", 1))] = scale.size
            scale, zpf = scale.reshape(shape), zp.reshape(shape)
        else:
            zpf = zp
        if node.op_type == "DequantizeLinear":
            return (x.astype(np.float32) - zpf.astype(np.float32)) * scale
        info = np.iinfo(zp.dtype)
        q = np.rint(x.astype(np.float32) / scale) + zpf.astype(np.float32)
        return np.clip(q, info.min, info.max).astype(zp.dtype)

    def fold(self, node):
        """Run ``node`` on its constant inputs with onnx.reference; its outputs become constants."""
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.output) == 1:
            self.consts[node.output[0]] = self._quant(node)
            return
        from onnx.reference import ReferenceEvaluator
        h = self.onnx.helper
        names = [v for v in node.input if v]
        feeds = {v: self.consts[v] for v in names}
        ins = [h.make_tensor_value_info(v, h.np_dtype_to_tensor_dtype(feeds[v].dtype), feeds[v].shape)
               for v in names]
        outs = [h.make_tensor_value_info(o, 0, None) for o in node.output if o]
        g = h.make_graph([node], "fold", ins, outs)
        m = h.make_model(g, opset_imports=list(self.model.opset_import))
        try:
            res = ReferenceEvaluator(m).run(None, feeds)
        except Exception as e:
            self.fail(node, f"cannot evaluate this node on its constant inputs: {type(e).__name__}: {e}")
        for o, v in zip([o for o in node.output if o], res):
            self.consts[o] = np.asarray(v)

    def op_Shape(self, node, raw):
        shape = np.array((1,) + tuple(self.shape(self.value(node, node.input[0]))), np.int64)
        a = self.attrs(node)
        start, end = a.get("start", 0), a.get("end")
        self.consts[node.output[0]] = shape[start:end]

    # -- the conversion --------------------------------------------------------------------
    def _sorted(self):
        """``(index, node)`` in an order where every node comes after the nodes it reads
        (the file's order when that already is one, as ONNX requires; some exporters do not)."""
        nodes = list(self.graph.node)
        ready = set(self.consts) | {self.input_name, ""}
        waiting = {}                  # value name -> indices of the nodes waiting for it
        missing = []
        for i, n in enumerate(nodes):
            need = {v for v in n.input if v not in ready}
            missing.append(need)
            for v in need:
                waiting.setdefault(v, []).append(i)
        made = {v for n in nodes for v in n.output}
        order, queue = [], [i for i, m in enumerate(missing) if not m]
        while queue:
            i = queue.pop(0)
            order.append(i)
            for v in nodes[i].output:
                for j in waiting.pop(v, ()):
                    missing[j].discard(v)
                    if not missing[j]:
                        queue.append(j)
            queue.sort()
        if len(order) != len(nodes):
            i = next(i for i in range(len(nodes)) if i not in set(order))
            v = sorted(missing[i])[0]
            why = "a cycle" if v in made else "a value no node computes"
            raise ConfigError(f"{self.where}: node {node_label(nodes[i], i)} ({nodes[i].op_type}) reads "
                              f"{v!r}: {why}")
        return [(i, nodes[i]) for i in order]

    def run(self):
        for i, node in self._sorted():
            self.index, self.node = i, node
            op = node.op_type
            if node.domain not in ("", "ai.onnx"):
                self.unsupported(node)
            ins = [v for v in node.input if v]
            if op == "Constant":
                self.op_Constant(node, None)
                continue
            if ins and all(v in self.consts for v in ins) and not any(v in self.values for v in ins):
                self.fold(node)
                continue
            handler = getattr(self, f"op_{op}", None)
            if handler is None:
                self.unsupported(node)
            result = handler(node, _raw_name(node, i))
            if result is not None and node.output:
                self.values[node.output[0]] = result
            for v in node.input:
                self.left[v] = self.left.get(v, 0) - 1
        outs = []
        for name in self.out_names:
            if name not in self.values or self.values[name] == INPUT:
                raise ConfigError(f"{self.where}: the graph output {name!r} is not computed by "
                                  f"supported layers")
            outs.append(self.values[name])
        return self.b.body(outs[0] if len(outs) == 1 else outs)

    def unsupported(self, node):
        dom = f" of domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
        raise ConfigError(f"{self.where}: unsupported ONNX op {node.op_type!r}{dom} (node "
                          f"{self._label(node)}); supported: {', '.join(SUPPORTED)}, and any op "
                          f"whose inputs are all constants (evaluated at import)")

    def _layer(self, node, raw, module, inp=None):
        return self.b.layer(raw, module, self.value(node, node.input[0]) if inp is None else inp)

    def op_Conv(self, node, raw):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        w = self.const(node, node.input[1], "weight")
        bias = self.const(node, node.input[2], "bias", optional=True) if len(node.input) > 2 else None
        in_shape = self.shape(x)
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
        x, pads = self._absorb_pad(node.input[0], x, pads)
        in_shape = self.shape(x)
        if bias is not None and bias.shape != (c_out,):
            raise ShapeError(f"{self.where}: node {node.name!r}: bias {node.input[2]!r} has shape "
                             f"{bias.shape}, expected {(c_out,)}")
        conv = Conv2d(in_shape[0], c_out, (kh, kw), stride, simple_padding(pads), dil, group,
                      bias=bias is not None)
        conv.params["weight"][...] = w
        if bias is not None:
            conv.params["bias"][...] = bias
        return self._layer(node, raw, conv, x)

    def _only_reader(self, value, node_name):
        """Whether the ONNX value ``value`` (computed by builder node ``node_name``) is read by the
        node being converted and by nothing else, now or later."""
        others = [v for v, b in self.values.items() if b == node_name and v != value]
        return self.left.get(value, 0) == 1 and not any(self.left.get(v) for v in others)

    def _absorb_pad(self, value, x, pads):
        """A zero ``Pad`` feeding a conv (TensorFlow-style 'same' padding) becomes the conv's own
        padding: ``(input before the pad, pads added up)``; else ``(x, pads)`` unchanged."""
        prev = next((n for n in self.b.nodes if n.name == x), None)
        if prev is None or not isinstance(prev.module, Pad) or prev.module.mode != "constant" \
                or prev.module.value != 0 or not self._only_reader(value, x):
            return x, pads
        return prev.inputs[0], tuple(p + q for p, q in zip(pads, prev.module.pads))

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

    def op_BatchNormalization(self, node, raw):
        a = self.attrs(node)
        if a.get("training_mode", 0):
            self.fail(node, "training_mode=1 is not an inference graph")
        x = self.value(node, node.input[0])
        shape = self.shape(x)
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

    def _activation(self, node, raw):
        return self._layer(node, raw, _ACTIVATIONS[node.op_type](self.attrs(node)))

    op_Relu = op_Sigmoid = op_Tanh = op_HardSwish = op_LeakyRelu = op_HardSigmoid = _activation

    def op_PRelu(self, node, raw):
        x = self.value(node, node.input[0])
        slope = self.const(node, node.input[1], "slope")
        c = self._per_channel(node, slope, self.shape(x))
        m = PReLU(c.size)
        m.params["weight"][...] = c
        return self._layer(node, raw, m, x)

    def op_Clip(self, node, raw):
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

    def op_LRN(self, node, raw):
        a = self.attrs(node)
        if len(self.shape(self.value(node, node.input[0]))) != 3:
            self.fail(node, "LRN needs an image input")
        return self._layer(node, raw, LRN(int(a["size"]), float(a.get("alpha", 1e-4)),
                                          float(a.get("beta", 0.75)), float(a.get("bias", 1.0))))

    def op_Softmax(self, node, raw):
        x = self.value(node, node.input[0])
        shape = self.shape(x)
        default = 1 if self.opset < 13 else -1
        ax = self.axis(node, self.attrs(node).get("axis", default), shape)
        if self.opset < 13 and int(np.prod(shape[ax + 1:])) != 1:
            self.fail(node, f"Softmax before opset 13 over the flattened axes {ax + 1}.. of {shape} "
                            f"is not supported")
        if self.out_names == [node.output[0]]:
            warnings.warn(f"{self.where}: the final Softmax is dropped; the network returns logits "
                          f"(same predicted classes)", stacklevel=4)
            self.dropped_softmax = True
            return x
        return self._layer(node, raw, Softmax(ax), x)

    def _pool(self, node, raw, cls):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        shape = self.shape(x)
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
        kw = {"ceil_mode": bool(a.get("ceil_mode", 0))}
        if cls is AvgPool2d:
            kw["count_include_pad"] = bool(a.get("count_include_pad", 0))
        try:
            m = cls(k, s, pads, **kw)
        except ConfigError as e:
            self.fail(node, str(e))
        return self._layer(node, raw, m, x)

    def op_MaxPool(self, node, raw):
        return self._pool(node, raw, MaxPool2d)

    def op_AveragePool(self, node, raw):
        return self._pool(node, raw, AvgPool2d)

    def op_GlobalAveragePool(self, node, raw):
        return self._layer(node, raw, GlobalAvgPool2d())

    def op_GlobalMaxPool(self, node, raw):
        return self._layer(node, raw, GlobalMaxPool2d())

    def op_Flatten(self, node, raw):
        axis = self.attrs(node).get("axis", 1)
        if axis != 1:
            self.fail(node, f"only Flatten(axis=1) is supported, got axis={axis}")
        return self._layer(node, raw, Flatten())

    def _channel_permutation(self, node, x, target):
        """``(source node, channel order)`` when reshaping ``x`` to ``target`` ends a Reshape ->
        Transpose -> Reshape chain (nothing else reading its parts) that only permutes the
        channels of an image: a channel shuffle; else None."""
        byname = {n.name: n for n in self.b.nodes}
        t = byname.get(x)
        r = byname.get(t.inputs[0]) if t is not None and isinstance(t.module, Transpose) else None
        if r is None or not isinstance(r.module, Reshape) or not self._only_reader(node.input[0], x) \
                or any(self.left.get(v) for v, b in self.values.items() if b == r.name):
            return None
        shape = self.shape(r.inputs[0])
        if len(shape) != 3 or tuple(target) != tuple(shape):
            return None
        idx = np.arange(int(np.prod(shape))).reshape(shape)
        out = idx.reshape(r.module.shape).transpose(t.module.perm).reshape(shape)
        order = out[:, 0, 0] // (shape[1] * shape[2])
        if not np.array_equal(out, idx[order]):
            return None
        return r.inputs[0], [int(v) for v in order]

    def _reshape_to(self, node, raw, x, target):
        """A Flatten (per-image target of one axis), a channel gather (a channel shuffle) or a
        Reshape to the per-image ``target``."""
        perm = self._channel_permutation(node, x, target)
        if perm is not None:
            return self.b.layer(raw, ChannelGather(perm[1]), perm[0])
        if len(target) == 1:
            return self._layer(node, raw, Flatten(), x)
        if tuple(target) == tuple(self.shape(x)):
            return x
        return self._layer(node, raw, Reshape(target), x)

    def op_Reshape(self, node, raw):
        x = self.value(node, node.input[0])
        shape = self.shape(x)
        n = int(np.prod(shape))
        target = [int(v) for v in self.const(node, node.input[1], "shape").reshape(-1)]
        if not self.attrs(node).get("allowzero", 0):
            full = (1,) + tuple(shape)
            target = [full[i] if v == 0 and i < len(full) else v for i, v in enumerate(target)]
        bad = f"only reshapes that keep the batch axis first are supported, got shape {target} for " \
              f"a per-image shape {tuple(shape)}"
        if not target or target.count(-1) > 1:
            self.fail(node, bad)
        if target[0] == -1:
            rest = target[1:]
            if -1 in rest or int(np.prod(rest)) != n:
                self.fail(node, bad)
        elif target[0] == 1:
            rest = target[1:]
            if -1 in rest:
                known = int(np.prod([v for v in rest if v != -1]))
                if known == 0 or n % known:
                    self.fail(node, bad)
                rest = [n // known if v == -1 else v for v in rest]
            if int(np.prod(rest)) != n or min(rest, default=1) < 1:
                self.fail(node, bad)
        else:
            self.fail(node, bad)
        return self._reshape_to(node, raw, x, rest)

    def op_Squeeze(self, node, raw):
        x = self.value(node, node.input[0])
        shape = self.shape(x)
        axes = self.ints(node, 1, "axes", "axes")
        axes = [i for i, d in enumerate(shape) if d == 1] if axes is None else \
            [self.axis(node, a, shape) for a in axes]
        if any(shape[a] != 1 for a in axes):
            self.fail(node, f"squeezes axes {axes} of size other than 1 (shape {shape})")
        return self._reshape_to(node, raw, x, [d for i, d in enumerate(shape) if i not in axes])

    def op_Unsqueeze(self, node, raw):
        x = self.value(node, node.input[0])
        shape = list(self.shape(x))
        axes = self.ints(node, 1, "axes", "axes") or []
        rank = len(shape) + 1 + len(axes)
        axes = sorted(a + rank if a < 0 else a for a in axes)
        if 0 in axes:
            self.fail(node, "unsqueezing the batch axis is not supported")
        for a in axes:
            shape.insert(a - 1, 1)
        return self._reshape_to(node, raw, x, shape)

    def op_Transpose(self, node, raw):
        x = self.value(node, node.input[0])
        shape = self.shape(x)
        perm = self.attrs(node).get("perm", list(range(len(shape), -1, -1)))
        if list(perm)[:1] != [0] or sorted(perm) != list(range(len(shape) + 1)):
            self.fail(node, f"only transposes that keep the batch axis first are supported, perm {perm}")
        perm = [int(p) - 1 for p in perm[1:]]
        if perm == sorted(perm):
            return x
        return self._layer(node, raw, Transpose(perm), x)

    def _channel_slice(self, node, raw, x, start, stop, step=1):
        c = self.shape(x)[0]
        if (start, stop, step) == (0, c, 1):
            return x
        return self.b.layer(raw, ChannelGather.span(start, stop, step), x)

    def op_Split(self, node, raw):
        x = self.value(node, node.input[0])
        shape = self.shape(x)
        a = self.attrs(node)
        if self.axis(node, a.get("axis", 0), shape) != 0:
            self.fail(node, "only splits along the channels (axis 1) are supported")
        sizes = self.ints(node, 1, "split", "split")
        k = len(node.output)
        if sizes is None:
            per = -(-shape[0] // k)
            sizes = [min(per, shape[0] - i * per) for i in range(k)]
        if len(sizes) != k or sum(sizes) != shape[0] or min(sizes) < 1:
            self.fail(node, f"split sizes {sizes} do not cover the {shape[0]} channels in {k} parts")
        start = 0
        for i, (out, size) in enumerate(zip(node.output, sizes)):
            if out:
                self.values[out] = self._channel_slice(node, f"{raw}_{i}", x, start, start + size)
            start += size
        return None

    def op_Slice(self, node, raw):
        x = self.value(node, node.input[0])
        shape = self.shape(x)
        if self.opset < 10:
            a = self.attrs(node)
            starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
        else:
            starts, ends = self.ints(node, 1, "", "starts"), self.ints(node, 2, "", "ends")
            axes, steps = self.ints(node, 3, "", "axes"), self.ints(node, 4, "", "steps")
        axes = list(range(len(starts))) if axes is None else list(axes)
        steps = [1] * len(starts) if steps is None else steps
        sl = {}
        for a, s0, s1, st in zip(axes, starts, ends, steps):
            ax = self.axis(node, a, shape)
            r = range(shape[ax])[slice(int(s0), int(s1), int(st))]
            if r != range(shape[ax]):
                sl[ax] = r
        if not sl:
            return x
        if list(sl) != [0] or sl[0].step < 1 or not len(sl[0]):
            self.fail(node, "only slices along the channels (axis 1, positive step) are supported")
        r = sl[0]
        return self._channel_slice(node, raw, x, r.start, r.stop, r.step)

    def op_Pad(self, node, raw):
        x = self.value(node, node.input[0])
        shape = self.shape(x)
        a = self.attrs(node)
        pads = self.ints(node, 1, "pads", "pads")
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            value = float(self.const(node, node.input[2], "constant_value").reshape(-1)[0])
        elif "value" in a:
            value = float(a["value"])
        if len(node.input) > 3 and node.input[3]:
            self.fail(node, "Pad with axes is not supported")
        if len(shape) != 3 or pads is None or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)):
            self.fail(node, f"only spatial pads of an image are supported, got pads {pads}")
        if min(pads) < 0:
            self.fail(node, f"negative pads (crops) {pads} are not supported")
        mode = a.get("mode", "constant")
        if mode not in Pad.MODES:
            self.fail(node, f"pad mode {mode!r} is not supported")
        return self._layer(node, raw, Pad((pads[2], pads[6], pads[3], pads[7]), mode, value), x)

    def op_ConvTranspose(self, node, raw):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        shape = self.shape(x)
        w = self.const(node, node.input[1], "weight")
        bias = self.const(node, node.input[2], "bias", optional=True) if len(node.input) > 2 else None
        if w.ndim != 4 or len(shape) != 3:
            self.fail(node, f"only 2-d transposed convolutions of images are supported (weight {w.shape})")
        group = int(a.get("group", 1))
        if w.shape[0] != shape[0]:
            raise ShapeError(f"{self.where}: node {node.name!r}: weight {node.input[1]!r} has shape "
                             f"{w.shape}, expected {shape[0]} input channels first")
        if "output_shape" in a or a.get("auto_pad", "NOTSET") != "NOTSET":
            self.fail(node, "output_shape and auto_pad are not supported; export with explicit pads")
        p = list(a.get("pads", [0, 0, 0, 0]))
        m = ConvTranspose2d(shape[0], w.shape[1] * group, w.shape[2:], tuple(a.get("strides", [1, 1])),
                            (p[0], p[2], p[1], p[3]), tuple(a.get("output_padding", [0, 0])),
                            tuple(a.get("dilations", [1, 1])), group, bias=bias is not None)
        m.params["weight"][...] = w
        if bias is not None:
            m.params["bias"][...] = bias.reshape(-1)
        return self._layer(node, raw, m, x)

    def op_Resize(self, node, raw):
        a = self.attrs(node)
        x = self.value(node, node.input[0])
        shape = self.shape(x)
        if len(shape) != 3:
            self.fail(node, f"needs an image input, got shape {shape}")
        full = (1,) + tuple(shape)
        if node.op_type == "Upsample" or self.opset < 11:
            scales = self.const(node, node.input[1], "scales") if len(node.input) > 1 \
                else np.asarray(a["scales"], np.float32)
            sizes, coord = None, "asymmetric"
        else:
            scales = self.const(node, node.input[2], "scales", optional=True) if len(node.input) > 2 else None
            sizes = self.const(node, node.input[3], "sizes", optional=True) if len(node.input) > 3 else None
            coord = a.get("coordinate_transformation_mode", "half_pixel")
            if scales is not None and scales.size == 0:
                scales = None
            if a.get("axes") is not None or a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
                self.fail(node, "axes and keep_aspect_ratio_policy are not supported")
        if sizes is not None and sizes.size:
            sizes = [int(v) for v in sizes.reshape(-1)]
            if len(sizes) != 4 or sizes[1] != shape[0] or sizes[0] not in (1, full[0]):
                self.fail(node, f"only spatial resizes are supported, sizes {sizes}")
            out, sc = tuple(sizes[2:]), None
        elif scales is not None:
            scales = [float(v) for v in scales.reshape(-1)]
            if len(scales) != 4 or scales[:2] != [1.0, 1.0]:
                self.fail(node, f"only spatial resizes are supported, scales {scales}")
            out = tuple(int(math.floor(n * s)) for n, s in zip(shape[1:], scales[2:]))
            sc = tuple(scales[2:])
        else:
            self.fail(node, "needs scales or sizes")
        mode = a.get("mode", "nearest")
        if mode not in ("nearest", "linear", "bilinear"):
            self.fail(node, f"mode {mode!r} is not supported (nearest, linear)")
        if coord == "tf_crop_and_resize" or a.get("antialias", 0) or a.get("exclude_outside", 0):
            self.fail(node, f"coordinate mode {coord!r}, antialias and exclude_outside are not supported")
        nearest = a.get("nearest_mode", "round_prefer_floor") if node.op_type == "Resize" and \
            self.opset >= 11 else "floor"
        try:
            m = Resize(out, "linear" if mode != "nearest" else "nearest", coord, nearest, sc)
        except ConfigError as e:
            self.fail(node, str(e))
        return self._layer(node, raw, m, x)

    op_Upsample = op_Resize

    def _linear(self, node, raw, w, bias, x):
        shape = self.shape(x)
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

    def op_Gemm(self, node, raw):
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

    def op_MatMul(self, node, raw):
        x = self.value(node, node.input[0])
        w = self.const(node, node.input[1], "right operand")
        if w.ndim != 2:
            self.fail(node, f"the right operand must be a matrix, got shape {w.shape}")
        return self._linear(node, raw, np.ascontiguousarray(w.T, np.float32), None, x)

    # -- element-wise arithmetic -------------------------------------------------------------
    def _per_channel(self, node, c, shape):
        """A constant broadcast against per-image ``shape``, as its ``(1,)`` or ``(C,)`` values;
        fails for other broadcasts (per-pixel constants)."""
        c = np.asarray(c, np.float32)
        if c.ndim == len(shape) + 1:
            if c.shape[0] != 1:
                self.fail(node, f"a constant of shape {c.shape} spans the batch")
            c = c[0]
        if c.ndim > len(shape):
            self.fail(node, f"a constant of shape {c.shape} for a per-image shape {shape}")
        c = c.reshape((1,) * (len(shape) - c.ndim) + c.shape)
        if c.size == 1:
            return c.reshape(1)
        if c.shape[0] != shape[0] or any(d != 1 for d in c.shape[1:]):
            self.fail(node, f"only scalar or per-channel constants are supported, got shape "
                            f"{c.shape} for a per-image shape {shape}")
        return c.reshape(-1)

    def _scale(self, node, raw, x, scale, shift):
        """``x * scale + shift`` per channel: folded into the layer computing ``x`` when nothing
        else reads it, else a Scale layer."""
        src_value = node.input[0] if node.input[0] in self.values else node.input[1]
        prev = next((n for n in self.b.nodes if n.name == x), None)
        if prev is not None and self._only_reader(src_value, x):
            new = _affine(prev.module, scale, shift) if prev.module is not None else None
            if new is not None:
                prev.module = new
                return x
        n = max(scale.size, shift.size)
        m = Scale(n)
        m.params["weight"][...] = scale
        m.params["bias"][...] = shift
        return self.b.layer(raw, m, x)

    def _arith(self, node, raw):
        op = _BINARY[node.op_type]
        if len(node.input) != 2:
            self.fail(node, f"{node.op_type} needs two inputs")
        a, b = node.input
        if a in self.values and b in self.values:
            va, vb = self.value(node, a), self.value(node, b)
            if op == "add" and self.shape(va) == self.shape(vb):
                return self.b.add(raw, [va, vb])
            return self.b.join(raw, Binary(op), [va, vb])
        const_first = a in self.consts
        x = self.value(node, b if const_first else a)
        c = self._per_channel(node, self.const(node, a if const_first else b, "operand"), self.shape(x))
        one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
        if op == "add":
            scale, shift = one, c
        elif op == "mul":
            scale, shift = c, zero
        elif op == "sub":
            scale, shift = (-one, c) if const_first else (one, -c)
        else:
            if const_first:
                self.fail(node, "division of a constant by a computed tensor is not supported")
            scale, shift = (1.0 / c.astype(np.float64)).astype(np.float32), zero
        return self._scale(node, raw, x, scale, shift)

    op_Add = op_Sub = op_Mul = op_Div = _arith

    def op_Sum(self, node, raw):
        vals = [self.value(node, v) for v in node.input]
        if len(vals) == 1:
            return vals[0]
        return self.b.add(raw, vals)

    def op_Concat(self, node, raw):
        vals = [self.value(node, v) for v in node.input if v]
        shape = self.shape(vals[0])
        ax = self.axis(node, self.attrs(node).get("axis", 1), shape)
        if len(vals) == 1:
            return vals[0]
        return self.b.join(raw, Concat(ax), vals)

    def op_Dropout(self, node, raw):
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
            self.fail(node, "the dropout mask output is not supported")
        return self.value(node, node.input[0])

    def op_Identity(self, node, raw):
        return self.value(node, node.input[0])

    def op_Cast(self, node, raw):
        if self.attrs(node).get("to") != self.onnx.TensorProto.FLOAT:
            self.fail(node, "only casts to float of computed tensors are supported")
        return self.value(node, node.input[0])

    def op_Constant(self, node, raw):
        a = self.attrs(node)
        vals = [k for k in ("value", "value_float", "value_floats", "value_int", "value_ints") if k in a]
        if not vals:
            self.fail(node, f"only tensor or number constants are supported, got {list(a)}")
        v = a[vals[0]]
        self.consts[node.output[0]] = np.asarray(v, np.float32 if "float" in vals[0] else None) \
            if not isinstance(v, np.ndarray) else np.asarray(v)
        return None


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
