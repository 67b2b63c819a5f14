"""Winograd convolution (conv/winograd.py): exact up to rounding, refused where it has no form.

The hypothesis equivalence against the naive reference (both layouts, every
padding, odd sizes) is the ``conv2d[winograd]`` / ``conv2d[winograd4]`` pairs in
tests/test_reference_pairs.py; here: the stated transforms, torch, the shipped
network's predictions, and the refusals.
"""
import os

import numpy as np
import pytest

import tabconv_np
from tabconv_np.conv.winograd import TRANSFORMS
from tabconv_np.data import load_dataset
from tabconv_np.errors import ConfigError
from tabconv_np.functional import conv2d
from tabconv_np.layers import Conv2d
from tabconv_np.network import Network

WEIGHTS = os.path.join(os.path.dirname(__file__), os.pardir, "weights")


@pytest.mark.parametrize("m", [2, 4])
def test_transforms_compute_the_1d_correlation_with_m_plus_2_multiplications(m):
    BT, G, AT = TRANSFORMS[m]
    assert BT.shape == (m + 2, m + 2) and G.shape == (m + 2, 3) and AT.shape == (m, m + 2)
    rng = np.random.default_rng(m)
    d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
    y = AT @ ((G @ g) * (BT @ d))                      # m + 2 products
    np.testing.assert_allclose(y, [d[i:i + 3] @ g for i in range(m)], rtol=1e-12, atol=1e-12)
    # multiplications per output of a 2-D tile, per channel: (m+2)^2/m^2 vs 9
    assert 9 / ((m + 2) ** 2 / m ** 2) == {2: 2.25, 4: 4.0}[m]


@pytest.mark.parametrize("method", ["winograd", "winograd4"])
def test_winograd_matches_torch(method):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 11, 9)).astype(np.float32)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                      padding=1).numpy()
    np.testing.assert_allclose(conv2d(x, w, b, padding=1, method=method), want, rtol=0,
                               atol=1e-3 if method == "winograd4" else 2e-4)


@pytest.mark.parametrize("method", ["winograd", "winograd4"])
@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_winograd_matches_torch(method, mult):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 12, 10, 7)).astype(np.float32)
    w = rng.standard_normal((12 * mult, 1, 3, 3)).astype(np.float32)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1,
                                      groups=12).numpy()
    for layout in ("NCHW", "NHWC"):
        xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        got = conv2d(xl, w, padding=1, groups=12, method=method, layout=layout)
        got = got if layout == "NCHW" else got.transpose(0, 3, 1, 2)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 if method == "winograd4" else 2e-5)


def test_depthwise_op_counts_have_no_channel_sums():
    from tabconv_np.conv.winograd import winograd_cost
    C, Ho, Wo = 32, 8, 8
    for m in (2, 4):
        tiles = (-(-Ho // m)) * (-(-Wo // m))
        dw, full = winograd_cost(C, C, Ho, Wo, m, groups=C), winograd_cost(C, C, Ho, Wo, m)
        # the elementwise stage: (m+2)^2 multiplies per tile and channel, no additions
        assert full["mults"] - dw["mults"] == tiles * (m + 2) ** 2 * (C - 1) * C
        assert full["adds"] - dw["adds"] == tiles * (m + 2) ** 2 * (C - 1) * C
        assert dw["offline"]["macs"] * C == full["offline"]["macs"]
    layer = Conv2d(C, C, 3, padding=1, groups=C, method="winograd")
    counts = tabconv_np.count_ops(Network(layer, (C, Ho, Wo)), (C, Ho, Wo))
    assert counts.total["macs"] == 0 and counts.total["mults"] == winograd_cost(C, C, Ho, Wo, 2, C)["mults"]


def test_shipped_network_predicts_the_same_with_winograd_where_it_applies():
    net = tabconv_np.load(os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5"))
    x, _ = load_dataset("sample", "test", limit=200)
    want = net.predict(x).argmax(1)
    for method in ("winograd", "winograd4"):
        used = 0
        for _, m in net.body.modules():
            if isinstance(m, Conv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1):
                m.method, used = method, used + 1
        assert used == 12                    # every 3x3 stride-1 conv of ResNet-18
        same = np.mean(net.predict(x).argmax(1) == want)
        assert same >= 0.999, (method, same)


@pytest.mark.parametrize("kw", [dict(stride=2), dict(dilation=2), dict(groups=2)])
def test_unsupported_configurations_are_refused_by_name(kw):
    x = np.zeros((1, 4, 8, 8), np.float32)
    w = np.zeros((4, 4 // kw.get("groups", 1), 3, 3), np.float32)
    with pytest.raises(ConfigError, match="Winograd"):
        conv2d(x, w, padding=1, method="winograd", **kw)
    with pytest.raises(ConfigError, match="3x3 kernel"):
        conv2d(x, np.zeros((4, 4, 5, 5), np.float32), method="winograd4")


def test_op_counts_know_multiplications_from_additions():
    """F(2x2,3x3) does 2.25x and F(4x4,3x3) 4x fewer multiplications in the elementwise stage."""
    from tabconv_np.conv.winograd import winograd_cost
    C, C_out, Ho, Wo = 16, 32, 8, 8
    direct = C * 9 * C_out * Ho * Wo
    for m, factor in ((2, 2.25), (4, 4.0)):
        elementwise = (-(-Ho // m)) * (-(-Wo // m)) * (m + 2) ** 2 * C * C_out
        assert direct / elementwise == factor
        cost = winograd_cost(C, C_out, Ho, Wo, m)
        assert cost["mults"] >= elementwise and cost["adds"] > 0 and cost["offline"]["macs"] > 0
    layer = Conv2d(C, C_out, 3, padding=1, method="winograd")
    counts = tabconv_np.count_ops(Network(layer, (C, Ho, Wo)), (C, Ho, Wo))
    assert counts.total["macs"] == 0 and counts.total["mults"] == winograd_cost(C, C_out, Ho, Wo, 2)["mults"]
    layer.method = "im2col"
    exact = tabconv_np.count_ops(Network(layer, (C, Ho, Wo)), (C, Ho, Wo))
    assert exact.total["multiplies"] / counts.total["multiplies"] > 1.5


def test_cli_ops_counts_a_method_where_it_applies(capsys):
    import json
    from tabconv_np.cli import main
    totals = {}
    for method in (None, "winograd", "winograd4"):
        args = ["ops", "--arch", "resnet18-paper", "--input", "3x224x224", "--json"]
        assert main(args + (["--method", method] if method else [])) == 0
        totals[method] = json.loads(capsys.readouterr().out)["total"]
    assert totals[None]["mults"] == 0 and totals[None]["multiplies"] == totals[None]["macs"]
    # stride-2 convs and the 7x7 stem keep their MACs; the 3x3 stride-1 ones multiply less
    assert totals["winograd"]["macs"] > 0
    assert totals["winograd4"]["multiplies"] < totals["winograd"]["multiplies"] < totals[None]["multiplies"]


def test_auto_picks_winograd_only_where_it_applies_and_pays():
    from tabconv_np.functional import choose_method
    assert choose_method(64, 28, 28, 64, 3, N=32) == "winograd4"
    assert choose_method(128, 14, 14, 128, 3, N=32) == "winograd4"
    # too few tiles for the per-call filter transform, half-empty tiles, narrow channels
    assert choose_method(64, 8, 8, 64, 3, N=1) == "im2col"
    assert choose_method(256, 2, 2, 256, 3, N=32) == "im2col"
    assert choose_method(16, 28, 28, 64, 3, N=32) == "im2col"
    # no Winograd form: never picked however large the call
    for kw in (dict(stride=2), dict(dilation=2), dict(groups=64)):
        assert "winograd" not in choose_method(64, 56, 56, 64, 3, N=32, **kw)
    assert "winograd" not in choose_method(64, 56, 56, 64, 5, N=32)
    # what auto computes is Winograd's answer, within its bound
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 32, 16, 16)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    assert choose_method(32, 16, 16, 32, 3, N=2) == "winograd4"
    np.testing.assert_array_equal(conv2d(x, w, padding=1), conv2d(x, w, padding=1, method="winograd4"))


@pytest.mark.parametrize("method", ["winograd", "winograd4"])
def test_winograd_error_on_the_shipped_layers_is_within_the_stated_bound(method):
    """Real weights and activations: |winograd - float64 reference| within the tile-wise bound."""
    from tabconv_np.pairs import assert_conv_close, winograd_error_bound
    from tabconv_np.evaluate import layer_inputs
    net = tabconv_np.load(os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5"))
    seen = layer_inputs(net, load_dataset("sample", "test", limit=8)[0], lambda m: isinstance(m, Conv2d)
                        and m.kernel_size == (3, 3) and m.stride == (1, 1) and m.groups == 1)
    assert len(seen) == 12
    for _, m, x in seen:
        w, b, pad = m.params["weight"], m.params.get("bias"), m.geometry.padding
        got = conv2d(x, w, b, padding=pad, method=method)
        want = conv2d(x.astype(np.float64), w.astype(np.float64), b, padding=pad, method="naive")
        bound = winograd_error_bound(x, w, b, padding=pad, method=method)
        assert_conv_close(got, want, bound, f"{method} on {m}")
