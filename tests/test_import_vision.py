"""Standard vision graph families, written in plain torch, exported by ``torch.onnx.export``,
imported, and checked against onnxruntime: outputs within 1e-4 relative (max |diff| / max |ref|)
at 224x224 (batch 1) and at the model's own input size (batch 2), random inputs and weights.

Small channel counts keep each model fast; every architectural feature of the family is
there (bottlenecks, Fire modules, inverted residuals with ReLU6, HardSwish and squeeze-excite,
dense concatenation, channel shuffle, Inception branches with LRN and asymmetric pads,
MTCNN's PReLU, ceil-mode pooling and two heads, a detector neck's Resize and ConvTranspose).
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import tabconv_np  # noqa: E402
from tabconv_np.blocks import Graph  # noqa: E402
from tabconv_np.importers import import_model  # noqa: E402
from vision_models import FAMILIES, Bottleneck, Neck, ONet, inception as vision_inception, nn, randomize, resnet50ish  # noqa: E402,E501

TOL = 1e-4


def _export(model, size, path):
    x = torch.randn(1, 3, size, size)
    names = ["y0", "y1"] if isinstance(model, (ONet, Neck)) else ["y0"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, x, path, dynamo=False, input_names=["x"], output_names=names,
                              dynamic_axes={"x": {0: "N"}}, opset_version=17)
    except Exception as e:  # the legacy exporter may be gone in some torch version
        pytest.skip(f"torch.onnx.export(dynamo=False) unavailable: {e}")
    return path


def _rel(got, ref):
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_matches_onnxruntime(family, tmp_path):
    make, own = FAMILIES[family]
    model = randomize(make(), 0)
    rng = np.random.default_rng(1)
    for size, batch in ((224, 1), (own, 2)):
        path = _export(model, size, str(tmp_path / f"{family}_{size}.onnx"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # a final Softmax dropped: not in these models
            net = import_model(path)
        assert net.input_shape == (3, size, size)
        x = rng.normal(size=(batch, 3, size, size)).astype(np.float32)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        refs = sess.run(None, {"x": x})
        got = net(x)
        got = list(got) if isinstance(got, tuple) else [got]
        assert len(got) == len(refs)
        for g, r in zip(got, refs):
            assert g.shape == r.shape
            assert _rel(g, r) <= TOL, (family, size, _rel(g, r))


def test_bottleneck_net_round_trips_and_counts(tmp_path):
    """A graph-shaped import (ResNet-50 style) saves to HDF5, loads, runs the same and counts."""
    model = randomize(resnet50ish(), 2)
    net = import_model(_export(model, 64, str(tmp_path / "r.onnx")))
    x = np.random.default_rng(3).normal(size=(2, 3, 64, 64)).astype(np.float32)
    tabconv_np.save(net, tmp_path / "r.h5")
    back = tabconv_np.load(tmp_path / "r.h5")
    assert back.config() == net.config()
    np.testing.assert_array_equal(back(x), net(x))
    counts = tabconv_np.count_ops(back)
    assert counts.total["macs"] > 0 and counts.total["residual_adds"] > 0


def test_two_heads_in_graph_order(tmp_path):
    """MTCNN's two outputs come back as a tuple in the graph's order; the score head keeps its
    Softmax (it is not the only output), and the network round-trips through HDF5."""
    model = randomize(ONet(), 4)
    net = import_model(_export(model, 48, str(tmp_path / "o.onnx")))
    assert isinstance(net.body, Graph) and len(net.body.outputs) == 2
    x = np.random.default_rng(5).normal(size=(3, 3, 48, 48)).astype(np.float32)
    score, box = net(x)
    with torch.no_grad():
        ts, tb = model(torch.from_numpy(x))
    assert score.shape == tuple(ts.shape) == (3, 2, 3, 3) and box.shape == tuple(tb.shape) == (3, 4, 3, 3)
    assert _rel(score, ts.numpy()) <= TOL and _rel(box, tb.numpy()) <= TOL
    np.testing.assert_allclose(score.sum(axis=1), 1, rtol=1e-5)
    images = np.random.default_rng(6).random((2, 3, 48, 48), dtype=np.float32)
    np.testing.assert_array_equal(net.predict(images), net(images)[0])      # eval's default: the first
    np.testing.assert_array_equal(net.predict(images, output=1), net(images)[1])
    assert [a.shape for a in net(x[:0])] == [(0, 2, 3, 3), (0, 4, 3, 3)]
    for a, b in zip(tabconv_np.prepare(net)(x), net(x)):        # a prepared plan gives both too
        assert _rel(a, b) <= 1e-5
    tabconv_np.save(net, tmp_path / "o.h5")
    back = tabconv_np.load(tmp_path / "o.h5")
    for a, b in zip(back(x), net(x)):
        np.testing.assert_array_equal(a, b)


def test_imported_bottleneck_resnet_converts_and_evaluates_from_the_cli(tmp_path, capsys):
    """``tabconv import`` of a ResNet-50-style ONNX graph, ``tabconv convert`` of the graph body
    (PQ tables, calibrated on Fashion-MNIST sample images), ``tabconv eval`` and ``tabconv ops``
    of the result; the table network stays close to the exact one on calibration images."""
    from tabconv_np.cli import main
    from tabconv_np.data import load_dataset
    model = randomize(nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                     Bottleneck(8, 4, 1), Bottleneck(16, 4, 2), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten(), nn.Linear(16, 10)), 8)
    src = str(tmp_path / "r.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, torch.randn(1, 1, 28, 28), src, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "N"}}, opset_version=17)
    except Exception as e:
        pytest.skip(f"torch.onnx.export(dynamo=False) unavailable: {e}")
    exact, tables = str(tmp_path / "r.h5"), str(tmp_path / "t.h5")
    assert main(["import", src, "-o", exact]) == 0
    assert isinstance(tabconv_np.load(exact).body, Graph)
    assert main(["convert", exact, "-o", tables, "--dataset", "sample", "--calib", "200",
                 "--prototypes", "16", "--iters", "4", "--json"]) == 0
    assert main(["eval", tables, "--dataset", "sample", "--limit", "100"]) == 0
    assert main(["ops", tables, "--json"]) == 0
    capsys.readouterr()
    net, conv = tabconv_np.load(exact), tabconv_np.load(tables)
    kinds = {type(m).__name__ for _, m in conv.body.modules()}
    assert "TableConv2d" in kinds and "Conv2d" not in kinds
    images = load_dataset("sample", "train")[0][:50]
    y, ye = conv.predict(images), net.predict(images)
    assert np.linalg.norm(y - ye) / np.linalg.norm(ye) < 0.5


@pytest.mark.parametrize("method", ["tabconv", "maddness", "lowrank"])
def test_imported_inception_and_mtcnn_convert_with_every_method(method, tmp_path):
    """convert() walks graph bodies with joins (Concat, LRN, Pad) and several outputs: every
    conv and linear of an imported Inception-style graph and of the two-headed MTCNN graph is
    converted, calibrated on Fashion-MNIST images (replicated to 3 channels, padded to the
    network's size); the converted network keeps close to the exact one on other images."""
    from tabconv_np.conversion import convert
    from tabconv_np.data import load_dataset
    images = load_dataset("sample", "train")[0]
    extra = {"prototypes": 16, "iters": 4} if method == "tabconv" else {}
    for make, size in ((vision_inception, 32), (ONet, 48)):
        net = import_model(_export(randomize(make(), 5), size, str(tmp_path / f"m{size}.onnx")))
        pad = (size - 28) // 2
        x = np.pad(np.repeat(images[:, :1], 3, axis=1), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        res = convert(net, x[:120], method=method, progress=False, **extra)
        weights = [n for n, m in net.body.modules() if type(m).__name__ in ("Conv2d", "Linear")]
        assert sorted(r["name"] for r in res.layers) == sorted(weights) and all(res.on)
        got, ref = res.network(x[200:230].astype(np.float32) / 255), net(x[200:230].astype(np.float32) / 255)
        got, ref = (got, ref) if isinstance(got, tuple) else ((got,), (ref,))
        for g, r in zip(got, ref):
            assert np.linalg.norm(g - r) / np.linalg.norm(r) < 0.3, (method, size)
