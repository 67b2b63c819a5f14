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

nn, F = torch.nn, torch.nn.functional
TOL = 1e-4


def conv_bn(cin, cout, k=3, s=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)


# --- ResNet-50 style ------------------------------------------------------------------------
class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = 4 * width
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride),
                                  conv_bn(width, cout, 1, act=None))
        self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None

    def forward(self, x):
        s = x if self.down is None else self.down(x)
        return F.relu(self.body(x) + s)


def resnet50ish():
    return nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), Bottleneck(8, 4, 1), Bottleneck(16, 4, 1),
                         Bottleneck(16, 8, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


# --- SqueezeNet -----------------------------------------------------------------------------
class Fire(nn.Module):
    def __init__(self, cin, sq, e1, e3):
        super().__init__()
        self.sq, self.e1, self.e3 = nn.Conv2d(cin, sq, 1), nn.Conv2d(sq, e1, 1), nn.Conv2d(sq, e3, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.sq(x))
        return torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)


def squeezenet():
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                         Fire(16, 4, 8, 8), Fire(16, 4, 8, 8), nn.MaxPool2d(3, 2, ceil_mode=True),
                         Fire(16, 8, 12, 12), nn.Dropout(0.5), nn.Conv2d(24, 10, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


# --- MobileNetV2 ----------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        h = cin * t
        self.res = stride == 1 and cin == cout
        self.body = nn.Sequential(conv_bn(cin, h, 1, act=nn.ReLU6), conv_bn(h, h, 3, stride, h, nn.ReLU6),
                                  conv_bn(h, cout, 1, act=None))

    def forward(self, x):
        return x + self.body(x) if self.res else self.body(x)


def mobilenetv2():
    return nn.Sequential(conv_bn(3, 8, 3, 2, act=nn.ReLU6), InvertedResidual(8, 8, 1, 1),
                         InvertedResidual(8, 12, 2, 4), InvertedResidual(12, 12, 1, 4),
                         conv_bn(12, 32, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.2), nn.Linear(32, 10))


# --- MobileNetV3 ----------------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class V3Block(nn.Module):
    def __init__(self, cin, h, cout, k, stride):
        super().__init__()
        self.res = stride == 1 and cin == cout
        self.body = nn.Sequential(conv_bn(cin, h, 1, act=nn.Hardswish), conv_bn(h, h, k, stride, h, nn.Hardswish),
                                  SqueezeExcite(h), conv_bn(h, cout, 1, act=None))

    def forward(self, x):
        y = self.body(x)
        return x + y if self.res else y


def mobilenetv3():
    return nn.Sequential(conv_bn(3, 8, 3, 2, act=nn.Hardswish), V3Block(8, 16, 8, 3, 1), V3Block(8, 24, 12, 5, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 16), nn.Hardswish(),
                         nn.Linear(16, 10))


# --- DenseNet -------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 2 * growth, 1, bias=False),
                               nn.BatchNorm2d(2 * growth), nn.ReLU(), nn.Conv2d(2 * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.f(x)], 1)


def densenet():
    return nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         DenseLayer(8, 4), DenseLayer(12, 4), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 8, 1, bias=False), nn.AvgPool2d(2, 2), DenseLayer(8, 4),
                         nn.BatchNorm2d(12), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))


# --- ShuffleNet -----------------------------------------------------------------------------
def shuffle(x, g):
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split channels, one half through a branch, concat, shuffle."""

    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(conv_bn(h, h, 1), conv_bn(h, h, 3, 1, h, None), conv_bn(h, h, 1))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return shuffle(torch.cat([a, self.branch(b)], 1), 2)


class GroupShuffle(nn.Module):
    """ShuffleNetV1 unit: grouped 1x1 conv, shuffle, depthwise 3x3, grouped 1x1, residual."""

    def __init__(self, c, g):
        super().__init__()
        self.g = g
        self.a, self.dw = conv_bn(c, c, 1, groups=g), conv_bn(c, c, 3, 1, c, None)
        self.b = conv_bn(c, c, 1, groups=g, act=None)

    def forward(self, x):
        return F.relu(x + self.b(self.dw(shuffle(self.a(x), self.g))))


def shufflenet():
    return nn.Sequential(conv_bn(3, 12, 3, 2), nn.MaxPool2d(3, 2, 1), GroupShuffle(12, 3), ShuffleUnit(12),
                         ShuffleUnit(12), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10))


# --- GoogLeNet / Inception ------------------------------------------------------------------
class _LRNFunction(torch.autograd.Function):
    """torch's local_response_norm, exported as one ONNX ``LRN`` node (as Caffe-born GoogLeNet and
    AlexNet graphs have it; torch's own export spells it out with 5-d average pooling)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        return F.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size, alpha, beta, k):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class LRN(nn.Module):
    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.args = (size, alpha, beta, k)

    def forward(self, x):
        return _LRNFunction.apply(x, *self.args)


class Inception(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.b1 = nn.Conv2d(cin, 4, 1)
        self.b2 = nn.Sequential(nn.Conv2d(cin, 4, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        # TF-style "same" 4x4 conv: the asymmetric pad is a Pad node before an unpadded conv
        self.b3 = nn.Sequential(nn.Conv2d(cin, 2, 1), nn.ReLU(), nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(2, 3, 4))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), nn.Conv2d(cin, 3, 1))

    def forward(self, x):
        return F.relu(torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1))


def inception():
    return nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                         LRN(5, 1e-3, 0.75, 2.0), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),
                         LRN(5), nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(3, 2),
                         Inception(12), Inception(16), nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4), nn.Linear(16, 10))


# --- MTCNN ----------------------------------------------------------------------------------
class ONet(nn.Module):
    """MTCNN's ONet shape: conv + PReLU, ceil-mode max pooling, a face-score and a box head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(8), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      nn.Conv2d(8, 12, 3), nn.PReLU(12), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      nn.Conv2d(12, 12, 3), nn.PReLU(12), nn.MaxPool2d(2, 2, ceil_mode=True),
                                      nn.Conv2d(12, 16, 2), nn.PReLU(16))
        self.score, self.box = nn.Conv2d(16, 2, 1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.features(x)
        return F.softmax(self.score(x), dim=1), self.box(x)


# --- a small detector neck ------------------------------------------------------------------
class Neck(nn.Module):
    """A feature pyramid: nearest and bilinear upsampling (both corner modes), a transposed-conv
    upsampling path, and a score head (sigmoid) and a box head: two outputs."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = conv_bn(3, 8, 3, 2), conv_bn(8, 12, 3, 2), conv_bn(12, 16, 3, 2)
        self.l1, self.l2, self.l3 = nn.Conv2d(8, 8, 1), nn.Conv2d(12, 8, 1), nn.Conv2d(16, 8, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.deconv = nn.ConvTranspose2d(8, 8, 4, 2, 1, bias=False)
        self.score, self.box = nn.Conv2d(8, 3, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        f1 = self.c1(x)
        f2 = self.c2(f1)
        f3 = self.c3(f2)
        p2 = self.l2(f2) + self.up(self.l3(f3))
        p1 = self.l1(f1) + F.interpolate(p2, size=f1.shape[-2:], mode="bilinear", align_corners=False) \
            + self.deconv(p2) + F.interpolate(p2, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.sigmoid(self.score(p1)), self.box(F.relu(p1))


FAMILIES = {
    "resnet50": (resnet50ish, 64),
    "squeezenet": (squeezenet, 96),
    "mobilenetv2": (mobilenetv2, 96),
    "mobilenetv3": (mobilenetv3, 96),
    "densenet": (densenet, 64),
    "shufflenet": (shufflenet, 64),
    "inception": (inception, 96),
    "mtcnn": (ONet, 48),
    "neck": (Neck, 128),
}


def _randomize(model, seed):
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
        elif isinstance(m, nn.PReLU):
            m.weight.data.uniform_(0.0, 0.5)
    return model.eval()


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
    model = _randomize(make(), 0)
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
    model = _randomize(resnet50ish(), 2)
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
    model = _randomize(ONet(), 4)
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
    model = _randomize(nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
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
