"""Importing ONNX graphs built with onnx.helper: chains, residual blocks (BasicBlock and
general graphs), the CLI, unsupported ops, and corrupt files."""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import tabconv_np  # noqa: E402
from tabconv_np.cli import main  # noqa: E402
from tabconv_np.errors import ConfigError, ShapeError, WeightFileError  # noqa: E402
from tabconv_np.importers import import_model  # noqa: E402
from tabconv_np.blocks import Graph  # noqa: E402
from tabconv_np.blocks import BasicBlock, Sequential  # noqa: E402
from helpers import check_damaged, mutate  # noqa: E402

RNG = np.random.default_rng(0)


class _G:
    """A tiny graph-building helper: initializers with random values, nodes, one input."""

    def __init__(self, shape=(1, 8, 8), batch="N"):
        self.inits, self.nodes, self.shape, self.batch, self.n = [], [], shape, batch, 0

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def rand(self, name, shape, scale=None, positive=False):
        scale = scale or np.sqrt(2.0 / max(1, int(np.prod(shape[1:])) if len(shape) > 1 else 1))
        v = RNG.uniform(0.5, 2.0, shape) if positive else RNG.normal(0, scale, shape)
        return self.const(name, v.astype(np.float32))

    def node(self, op, inputs, name=None, **attrs):
        self.n += 1
        out = f"t{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name or f"{op.lower()}{self.n}", **attrs))
        return out

    def conv(self, x, cin, cout, k, bias=True, **attrs):
        w = self.rand(f"w{self.n}", (cout, cin, k, k))
        ins = [x, w] + ([self.rand(f"b{self.n}", (cout,), 0.1)] if bias else [])
        return self.node("Conv", ins, kernel_shape=[k, k], **attrs)

    def bn(self, x, c, eps=1e-5, name=None):
        n = self.n
        ins = [x, self.rand(f"g{n}", (c,), 0.2), self.rand(f"be{n}", (c,), 0.2),
               self.rand(f"m{n}", (c,), 0.2), self.rand(f"v{n}", (c,), positive=True)]
        return self.node("BatchNormalization", ins, name=name, epsilon=eps)

    def model(self, out, opset=15):  # BatchNormalization-14+: the reference evaluator runs inference mode
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [self.batch, *self.shape])
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
        g = helper.make_graph(self.nodes, "g", [x], [y], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        return m


def _save(model, path):
    onnx.save(model, str(path))
    return str(path)


def _reference(model, x):
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def _chain_model():
    g = _G((3, 12, 12))
    t = g.conv("x", 3, 8, 3, bias=False, pads=[1, 1, 1, 1], name="stem/conv")
    t = g.bn(t, 8)
    t = g.node("Relu", [t])
    t = g.node("MaxPool", [t], kernel_shape=[2, 2], strides=[2, 2])
    t = g.conv(t, 8, 8, 3, strides=[2, 2], pads=[1, 0, 1, 0])        # asymmetric padding
    t = g.node("Clip", [t, g.const("lo", np.float32(0)), g.const("hi", np.float32(6))])
    t = g.conv(t, 8, 6, 1, auto_pad="SAME_UPPER")
    t = g.node("Clip", [t, g.const("lo2", np.float32(0))])            # = ReLU
    t = g.node("AveragePool", [t], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
               count_include_pad=1)
    t = g.node("Dropout", [t])
    t = g.node("Reshape", [t, g.const("shape", np.array([0, -1], np.int64))])
    t = g.node("Gemm", [t, g.rand("fc1w", (20, 6 * 3 * 2)), g.rand("fc1b", (20,), 0.1)], transB=1)
    t = g.node("Relu", [t])
    t = g.node("Gemm", [t, g.rand("fc2w", (20, 16)), g.rand("fc2b", (16,), 0.1)], alpha=0.5, beta=2.0)
    t = g.node("Identity", [t])
    t = g.node("MatMul", [t, g.rand("mw", (16, 5))])
    t = g.node("Add", [t, g.rand("mb", (5,), 0.1)])
    return g.model(t)


def test_chain_matches_reference(tmp_path):
    model = _chain_model()
    path = _save(model, tmp_path / "chain.onnx")
    net = import_model(path)
    assert isinstance(net.body, Sequential) and net.input_shape == (3, 12, 12)
    x = RNG.normal(size=(2, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(net(x), _reference(model, x), atol=1e-4, rtol=1e-4)
    types = [type(m).__name__ for m in net.body.children.values()]
    assert types.count("Clip") == 1 and types.count("ReLU") == 3 and types.count("Linear") == 3


def _block(g, x, cin, cout, stride, bn=True, name="layer1.0"):
    p = f"/{name.split('.')[0]}/{name}"
    t = g.conv(x, cin, cout, 3, bias=not bn, strides=[stride, stride], pads=[1, 1, 1, 1], name=f"{p}/conv1/Conv")
    if bn:
        t = g.bn(t, cout, name=f"{p}/bn1/BatchNormalization")
    t = g.node("Relu", [t], name=f"{p}/relu/Relu")
    t = g.conv(t, cout, cout, 3, bias=not bn, pads=[1, 1, 1, 1], name=f"{p}/conv2/Conv")
    if bn:
        t = g.bn(t, cout, name=f"{p}/bn2/BatchNormalization")
    s = x
    if stride != 1 or cin != cout:
        s = g.conv(x, cin, cout, 1, bias=not bn, strides=[stride, stride], name=f"{p}/downsample/downsample.0/Conv")
        if bn:
            s = g.bn(s, cout, name=f"{p}/downsample/downsample.1/BatchNormalization")
    t = g.node("Add", [s, t], name=f"{p}/Add")   # shortcut first: the order must not matter
    return g.node("Relu", [t], name=f"{p}/relu_1/Relu")


@pytest.mark.parametrize("bn", [True, False], ids=["bn", "bn-folded"])
def test_resnet_blocks_become_basic_blocks(tmp_path, bn):
    g = _G((2, 8, 8))
    t = g.conv("x", 2, 4, 3, bias=not bn, pads=[1, 1, 1, 1])
    if bn:
        t = g.bn(t, 4)
    t = g.node("Relu", [t])
    t = _block(g, t, 4, 4, 1, bn, "layer1.0")
    t = _block(g, t, 4, 8, 2, bn, "layer2.0")
    t = g.node("GlobalAveragePool", [t])
    t = g.node("Flatten", [t])
    t = g.node("Gemm", [t, g.rand("fcw", (3, 8)), g.rand("fcb", (3,), 0.1)], transB=1)
    model = g.model(t)
    net = import_model(_save(model, tmp_path / "res.onnx"))
    blocks = [(n, m) for n, m in net.body.children.items() if isinstance(m, BasicBlock)]
    assert [n for n, _ in blocks] == ["layer1_0", "layer2_0"]
    assert blocks[1][1].stride == 2 and "downsample" in blocks[1][1].children
    assert blocks[0][1].batchnorm == bn
    x = RNG.normal(size=(3, 2, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(net(x), _reference(model, x), atol=1e-4, rtol=1e-4)
    # eval/ops/convert see an ordinary network; fold_batchnorm works on it
    np.testing.assert_allclose(tabconv_np.fold_batchnorm(net)(x), net(x), atol=1e-4, rtol=1e-4)


def test_torch_onnx_export_of_a_resnet(tmp_path):
    torch = pytest.importorskip("torch")
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights"))
    try:
        from models_torch import BasicBlock as TorchBlock
    finally:
        sys.path.pop(0)
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          TorchBlock(4, 4, 1), TorchBlock(4, 8, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_(0, 0.2)
    model.eval()
    x = torch.randn(2, 1, 8, 8)
    path = str(tmp_path / "torch.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, x[:1], path, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "N"}})
    except Exception as e:  # the legacy exporter may be gone in some torch version
        pytest.skip(f"torch.onnx.export(dynamo=False) unavailable: {e}")
    net = import_model(path)
    assert sum(isinstance(m, BasicBlock) for m in net.body.children.values()) == 2
    with torch.no_grad():
        np.testing.assert_allclose(net(x.numpy()), model(x).numpy(), atol=1e-4, rtol=1e-4)


def test_other_residual_graphs_use_graph_layer(tmp_path):
    g = _G((4, 6, 6))
    a = g.node("Relu", [g.conv("x", 4, 4, 1)])
    b = g.conv(a, 4, 4, 3, pads=[1, 1, 1, 1])
    t = g.node("Add", [a, b])                          # no ReLU after the sum: not a BasicBlock
    c = g.conv(t, 4, 4, 1)
    t = g.node("Add", [t, c])
    t = g.node("Add", [t, a])                          # a long skip
    t = g.node("GlobalAveragePool", [t])
    t = g.node("Flatten", [t])
    t = g.node("Gemm", [t, g.rand("fcw", (4, 2))])
    model = g.model(t)
    path = _save(model, tmp_path / "graph.onnx")
    net = import_model(path)
    assert isinstance(net.body, Graph)
    x = RNG.normal(size=(2, 4, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(net(x), _reference(model, x), atol=1e-4, rtol=1e-4)
    # config round trip through the project's HDF5 format, op counts with Add rows
    out = tmp_path / "graph.h5"
    tabconv_np.save(net, out)
    back = tabconv_np.load(out)
    assert back.config() == net.config()
    np.testing.assert_array_equal(back(x), net(x))
    counts = tabconv_np.count_ops(back)
    assert sum(r["type"] == "Add" for r in counts.rows) == 3
    assert counts.total["residual_adds"] == 3 * 4 * 6 * 6


def test_cli_import_onnx(tmp_path, capsys):
    model = _chain_model()
    src = _save(model, tmp_path / "chain.onnx")
    out = str(tmp_path / "chain.h5")
    assert main(["import", src, "-o", out]) == 0
    assert "onnx" in capsys.readouterr().out
    x = RNG.normal(size=(1, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(tabconv_np.load(out)(x), _reference(model, x), atol=1e-4, rtol=1e-4)
    assert main(["ops", out, "--json"]) == 0
    assert main(["import", src, "-o", out, "--arch", "lenet", "--force"]) == 2
    assert "PyTorch state dicts only" in capsys.readouterr().err


def test_unsupported_op_names_op_and_node(tmp_path):
    g = _G((1, 4, 4))
    t = g.node("Relu", ["x"])
    t = g.node("Erf", [t], name="head/act")            # Sigmoid, the op here before, is supported now
    with pytest.raises(ConfigError, match="unsupported ONNX op 'Erf' \\(node 'head/act'\\)"):
        import_model(_save(g.model(t), tmp_path / "sig.onnx"))
    g.nodes[-1].name = ""                               # unnamed: its index and op; the supported list
    with pytest.raises(ConfigError, match=r"unsupported ONNX op 'Erf' \(node #1 \(an unnamed Erf\)\); "
                                          r"supported: Conv, .*BatchNormalization, .*Concat"):
        import_model(_save(g.model(t), tmp_path / "sig.onnx"))


def test_refusals_and_shapes(tmp_path):
    g = _G((1, 5, 5))
    t = g.node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2])
    with pytest.raises(ConfigError, match="dilated pooling"):      # (ceil_mode, refused here before,
        import_model(_save(g.model(t), tmp_path / "ceil.onnx"))   # is supported now)
    g = _G((1, 4, 4))
    t = g.node("Softmax", [g.node("Flatten", ["x"])])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        net = import_model(_save(g.model(t), tmp_path / "softmax.onnx"))
    assert net.meta["dropped_softmax"] and "Softmax is dropped" in str(w[0].message)
    g = _G((3, 4, 4), batch="N")
    g.shape = ("C", 4, 4)
    t = g.node("Relu", ["x"])
    with pytest.raises(ConfigError, match="--input"):
        import_model(_save(g.model(t), tmp_path / "sym.onnx"))
    assert import_model(str(tmp_path / "sym.onnx"), input_shape="3x4x4").input_shape == (3, 4, 4)
    g = _G((2, 4, 4))
    t = g.conv("x", 3, 4, 3)
    with pytest.raises(ShapeError, match="expected \\(4, 2, 3, 3\\)"):
        import_model(_save(g.model(t), tmp_path / "bad.onnx"))


# --- corrupt files ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blob():
    return _chain_model().SerializeToString()


def test_damaged_onnx_files_raise_project_errors(blob, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fuzz") / "damaged.onnx")
    n = len(blob)

    @settings(max_examples=80, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def run(data):
        check_damaged(path, mutate(data, blob, st.integers(0, n - 1)))

    run()
    with open(path, "wb") as f:
        f.write(b"")
    with pytest.raises(WeightFileError, match="empty"):
        import_model(path)
