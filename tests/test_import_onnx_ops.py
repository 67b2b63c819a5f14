"""ONNX ops beyond the chain/residual set, on graphs built with onnx.helper, checked against
onnxruntime (or onnx's reference evaluator when onnxruntime is missing): constants evaluated at
import, per-channel arithmetic folded or kept as a Scale layer, joins, slices, pads, pooling
with asymmetric pads and ceil mode, activations; and the new layers in both layouts."""
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import tabconv_np  # noqa: E402
from tabconv_np.activations import HardSigmoid, HardSwish, LeakyReLU, PReLU, Sigmoid, Softmax, Tanh  # noqa: E402
from tabconv_np.blocks import Graph  # noqa: E402
from tabconv_np.importers import import_model  # noqa: E402
from tabconv_np.joins import Binary, Concat, Scale  # noqa: E402
from tabconv_np.layers import LRN, AvgPool2d, Conv2d, GlobalMaxPool2d, MaxPool2d  # noqa: E402
from tabconv_np.registry import from_config  # noqa: E402
from tabconv_np.reshapes import ChannelGather, Pad, Reshape, Transpose  # noqa: E402
from tabconv_np.upsampling import ConvTranspose2d, Resize  # noqa: E402
from test_import_onnx import _G, _save  # noqa: E402

RNG = np.random.default_rng(7)


def _run_reference(model, x):
    try:
        import onnxruntime as ort
    except ImportError:
        from onnx.reference import ReferenceEvaluator
        return ReferenceEvaluator(model).run(None, {"x": x})
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _check(model, tmp_path, batch=2, outputs=None):
    net = import_model(_save(model, tmp_path / "m.onnx"))
    x = RNG.normal(size=(batch,) + tuple(net.input_shape)).astype(np.float32)
    refs = _run_reference(model, x)
    got = net(x)
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(refs)
    for g, r in zip(got, refs):
        assert g.shape == r.shape
        assert np.abs(g - r).max() <= 1e-4 * max(np.abs(r).max(), 1e-30)
    return net


def _multi(g, outs, opset=17):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [g.batch, *g.shape])
    ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    m = helper.make_model(helper.make_graph(g.nodes, "g", [x], ys, g.inits),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_constants_are_evaluated_at_import(tmp_path):
    """Weights from ConstantOfShape and a Dequantize of int8 weights; a reshape target computed by
    Shape/Gather/Unsqueeze/Concat; an Add of two constants."""
    g = _G((4, 6, 6))
    shape = g.const("wshape", np.array([6, 4, 1, 1], np.int64))
    ones = g.node("ConstantOfShape", [shape], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.25]))
    t = g.node("Conv", ["x", ones], kernel_shape=[1, 1])
    q = g.const("q", RNG.integers(-100, 100, (6, 6, 3, 3)).astype(np.int8))
    w = g.node("DequantizeLinear", [q, g.const("qs", np.float32(0.01)), g.const("qz", np.int8(0))])
    b = g.node("Add", [g.rand("b1", (6,), 0.1), g.rand("b2", (6,), 0.1)])
    t = g.node("Conv", [t, w, b], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    s = g.node("Shape", [t])
    n = g.node("Unsqueeze", [g.node("Gather", [s, g.const("i0", np.array(0, np.int64))], axis=0),
                             g.const("ax", np.array([0], np.int64))])
    target = g.node("Concat", [n, g.const("minus1", np.array([-1], np.int64))], axis=0)
    t = g.node("Reshape", [t, target])
    t = g.node("Gemm", [t, g.rand("fw", (3, 6 * 36))], transB=1)
    net = _check(g.model(t, opset=17), tmp_path)
    assert [type(m).__name__ for m in net.body.children.values()] == ["Conv2d", "Conv2d", "Flatten", "Linear"]


def test_per_channel_arithmetic_folds_or_scales(tmp_path):
    g = _G((3, 5, 5))
    c = g.conv("x", 3, 4, 3, pads=[1, 1, 1, 1])
    t = g.node("Mul", [c, g.rand("s", (1, 4, 1, 1), positive=True)])    # folded into the conv
    t = g.node("Add", [g.rand("sh", (4, 1, 1), 0.5), t])                 # constant first, folded
    t = g.node("Div", [t, g.const("six", np.float32(6.0))])              # scalar, folded
    r = g.node("Relu", [t])
    u = g.node("Sub", [r, g.rand("m", (4, 1, 1), 0.5)])                  # after a ReLU: a Scale layer
    v = g.node("Sub", [g.const("one", np.float32(1.0)), r])              # 1 - x: a Scale layer too
    t = g.node("Sum", [u, v, r])
    t = g.node("Mul", [t, g.node("Sigmoid", [t])])                       # swish: Binary mul
    t = g.node("Div", [t, g.node("Add", [g.node("Tanh", [t]), g.const("two", np.float32(2.0))])])
    net = _check(g.model(t, opset=17), tmp_path)
    kinds = [type(m).__name__ for _, m in net.body.modules()]
    assert kinds.count("Conv2d") == 1 and kinds.count("Scale") == 3 and kinds.count("Binary") == 2


def test_joins_slices_and_several_outputs(tmp_path):
    g = _G((6, 7, 7))
    a, b, c = "sa", "sb", "sc"
    g.nodes.append(helper.make_node("Split", ["x", g.const("sizes", np.array([1, 2, 3], np.int64))],
                                    [a, b, c], axis=1, name="split"))
    t = g.node("Concat", [g.node("LeakyRelu", [c], alpha=0.1), a, g.node("Tanh", [b])], axis=1)
    s = g.node("Slice", [t, g.const("st", np.array([1], np.int64)), g.const("en", np.array([6], np.int64)),
                         g.const("ax", np.array([1], np.int64)), g.const("sp", np.array([2], np.int64))])
    p = g.node("Pad", [s, g.const("pads", np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64))], mode="reflect")
    m = g.node("MaxPool", [p], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0], ceil_mode=1)
    av = g.node("AveragePool", [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0],
                count_include_pad=0, ceil_mode=1)
    gm = g.node("GlobalMaxPool", [av])
    sm = g.node("Softmax", [g.node("Flatten", [gm])], axis=-1)
    hs = g.node("HardSigmoid", [m], alpha=0.3, beta=0.4)
    sq = g.node("Squeeze", [g.node("GlobalAveragePool", [hs]), g.const("sqa", np.array([2, 3], np.int64))])
    net = _check(_multi(g, [sm, sq, av]), tmp_path)
    assert isinstance(net.body, Graph) and len(net.body.outputs) == 3
    assert net.out_shape == (6,) and net.body.out_shapes(net.input_shape)[2] == (6, 4, 4)


def test_transpose_reshape_channel_shuffle_and_lrn(tmp_path):
    g = _G((6, 4, 5))
    t = g.node("Reshape", ["x", g.const("s5", np.array([0, 2, 3, 4, 5], np.int64))])
    t = g.node("Transpose", [t], perm=[0, 2, 1, 3, 4])
    t = g.node("Reshape", [t, g.const("s4", np.array([-1, 6, 4, 5], np.int64))])
    t = g.node("LRN", [t], size=3, alpha=0.01, beta=0.75, bias=2.0)
    t = g.node("Transpose", [t], perm=[0, 1, 3, 2])                     # not a channel permutation
    t = g.node("PRelu", [t, g.rand("slope", (6, 1, 1), 0.3)])
    t = g.node("HardSwish", [t])
    t = g.node("Unsqueeze", [g.node("GlobalAveragePool", [t]), g.const("ua", np.array([2], np.int64))])
    t = g.node("Reshape", [t, g.const("flat", np.array([1, -1], np.int64))])   # exported at batch 1
    net = _check(g.model(t, opset=17), tmp_path, batch=1)
    kinds = [type(m).__name__ for _, m in net.body.modules()]
    assert kinds.count("ChannelGather") == 1 and kinds.count("Transpose") == 1 and "Reshape" in kinds
    gather = next(m for _, m in net.body.modules() if type(m).__name__ == "ChannelGather")
    assert gather.indices == (0, 3, 1, 4, 2, 5)                         # the shuffle, as one gather


def test_unsupported_forms_are_refused_by_name(tmp_path):
    g = _G((2, 4, 4))
    t = g.node("Slice", ["x", g.const("st", np.array([1], np.int64)), g.const("en", np.array([3], np.int64)),
                         g.const("ax", np.array([2], np.int64))], name="crop")
    with pytest.raises(tabconv_np.errors.ConfigError, match="node 'crop' \\(Slice\\): only slices along"):
        import_model(_save(g.model(t), tmp_path / "s.onnx"))
    g = _G((2, 4, 4))
    t = g.node("Mul", ["x", g.rand("pix", (1, 4, 4))], name="pixmul")
    with pytest.raises(tabconv_np.errors.ConfigError, match="pixmul.*scalar or per-channel"):
        import_model(_save(g.model(t), tmp_path / "p.onnx"))


# --- the new layers on their own -------------------------------------------------------------
def _layers():
    prelu = PReLU(4)
    prelu.params["weight"][...] = RNG.uniform(0, 0.5, 4)
    sc = Scale(4)
    sc.params["weight"][...] = RNG.normal(size=4)
    sc.params["bias"][...] = RNG.normal(size=4)
    deconv = ConvTranspose2d(4, 6, 3, 2, (1, 0, 0, 1), 1, 1, 2)
    deconv.params["weight"][...] = RNG.normal(size=deconv.params["weight"].shape)
    deconv.params["bias"][...] = RNG.normal(size=6)
    return [deconv, Resize((7, 9), "linear", "half_pixel"), Resize((9, 4), "nearest", "align_corners",
                                                                   "round_prefer_ceil"),
            LeakyReLU(0.1), prelu, Sigmoid(), Tanh(), HardSigmoid(), HardSwish(), Softmax(0),
            LRN(3, 0.1), GlobalMaxPool2d(), sc, Reshape((2, 2, 5, 6)), Transpose((0, 2, 1)),
            ChannelGather.span(1, 4, 2), ChannelGather((3, 0, 2)), Pad((1, 0, 2, 1), "edge"),
            MaxPool2d(3, 2, (0, 1, 1, 1), True),
            AvgPool2d(2, 2, (1, 0, 0, 1), True, False)]


@pytest.mark.parametrize("layer", _layers(), ids=lambda m: type(m).__name__)
def test_layers_agree_across_layouts_and_round_trip(layer):
    x = RNG.normal(size=(2, 4, 5, 6)).astype(np.float32)
    y = layer(x, "NCHW")
    yt = layer(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "NHWC")
    if y.ndim == 4:
        yt = yt.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(yt, y, rtol=1e-6, atol=1e-6)
    assert y.shape[1:] == tuple(layer.out_shape((4, 5, 6)))
    back = from_config(layer.config())
    back.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(back(x), y)
    assert all(v >= 0 for v in layer.cost((4, 5, 6)).values())


def test_joins_in_both_layouts():
    a = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    b = RNG.normal(size=(2, 2, 4, 5)).astype(np.float32)
    g = RNG.normal(size=(2, 3, 1, 1)).astype(np.float32)
    nhwc = lambda v: np.ascontiguousarray(v.transpose(0, 2, 3, 1))  # noqa: E731
    cat = Concat(0)
    np.testing.assert_array_equal(cat([a, b], "NCHW"), np.concatenate([a, b], 1))
    np.testing.assert_array_equal(cat([nhwc(a), nhwc(b)], "NHWC"), nhwc(np.concatenate([a, b], 1)))
    assert cat.out_shape([(3, 4, 5), (2, 4, 5)]) == (5, 4, 5)
    mul = Binary("mul")
    np.testing.assert_array_equal(mul([nhwc(a), nhwc(g)], "NHWC"), nhwc(a * g))
    assert mul.out_shape([(3, 4, 5), (3, 1, 1)]) == (3, 4, 5)
    graph = Graph([("c", ["input"], Conv2d(3, 3, 1)), ("m", ["c", "input"], Binary("sub")),
                   ("k", ["m", "input", "c"], Concat(0))], output=["k", "c"])
    k, c = graph(a, "NCHW")
    np.testing.assert_allclose(k[:, :3], c - a, rtol=1e-6)
    assert graph.out_shapes((3, 4, 5)) == [(9, 4, 5), (3, 4, 5)]
    rebuilt = from_config(graph.config())
    assert rebuilt.config() == graph.config()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts = tabconv_np.count_ops(tabconv_np.Network(graph, (3, 4, 5)))
    assert counts.total["adds"] == 3 * 4 * 5


def test_cli_eval_picks_an_output(tmp_path, capsys):
    """A two-output graph (boxes first, class scores second) evaluates on the second with
    ``tabconv eval --output 1``; an output it does not have is refused."""
    from tabconv_np.cli import main
    g = _G((1, 28, 28))
    t = g.node("Relu", [g.conv("x", 1, 6, 3, strides=[2, 2])])
    f = g.node("Flatten", [g.node("GlobalAveragePool", [t])])
    boxes = g.node("Gemm", [f, g.rand("bw", (4, 6))], transB=1)
    scores = g.node("Gemm", [f, g.rand("sw", (10, 6))], transB=1)
    src = _save(_multi(g, [boxes, scores]), tmp_path / "two.onnx")
    out = str(tmp_path / "two.h5")
    assert main(["import", src, "-o", out]) == 0
    assert "outputs (4,), (10,)" in capsys.readouterr().out
    assert main(["eval", out, "--dataset", "sample", "--limit", "50", "--output", "1", "--json"]) == 0
    assert '"images": 50' in capsys.readouterr().out
    assert main(["eval", out, "--dataset", "sample", "--limit", "50", "--output", "2"]) == 2
    assert "output must be <= 1" in capsys.readouterr().err


def test_zero_pad_before_a_conv_becomes_its_padding(tmp_path):
    g = _G((2, 6, 7))
    p = g.node("Pad", ["x", g.const("pads", np.array([0, 0, 1, 0, 0, 0, 2, 1], np.int64))])
    a = g.conv(p, 2, 3, 3, pads=[0, 1, 0, 1])                       # absorbs the pad: (1, 2, 1, 2)
    q = g.node("Pad", [a, g.const("pads2", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))])
    m = g.node("MaxPool", [q], kernel_shape=[2, 2])                 # -inf padding: the Pad stays
    r = g.node("Pad", [a, g.const("pads3", np.array([0, 0, 0, 1, 0, 0, 0, 1], np.int64))])
    c1, c2 = g.conv(r, 3, 2, 1), g.conv(r, 3, 2, 2)                 # read twice: the Pad stays
    net = _check(_multi(g, [m, c1, c2]), tmp_path)
    kinds = {n: m for n, m in net.body.modules() if type(m).__name__ in ("Pad", "Conv2d")}
    assert sum(type(v).__name__ == "Pad" for v in kinds.values()) == 2
    assert any(getattr(v, "padding", None) == (1, 2, 1, 2) for v in kinds.values())


def test_nodes_out_of_order_are_sorted_and_cycles_refused(tmp_path):
    g = _G((2, 5, 5))
    a = g.conv("x", 2, 3, 3, pads=[1, 1, 1, 1])
    b = g.node("Relu", [a])
    c = g.node("Concat", [a, b], axis=1)
    g.nodes.reverse()                                   # every node before the ones it reads
    _check(g.model(c), tmp_path)
    g.nodes[0].input[0] = c                             # the Concat now reads its own output
    with pytest.raises(tabconv_np.errors.ConfigError, match="reads 't3': a cycle"):
        import_model(_save(g.model(c), tmp_path / "cycle.onnx"))
