"""Bundled networks: MAC counts against docs/background.md, BN folding, layouts, repr, CLI."""
import json

import numpy as np
import pytest

from tabconv_np import count_ops, fold_batchnorm
from tabconv_np.cli import main
from tabconv_np.errors import ConfigError, ShapeError
from tabconv_np.layers import BatchNorm2d
from tabconv_np.models import ARCHS, build
from helpers import randomize

# docs/background.md section 2: conv + linear MACs, batch 1, 10 classes
REFERENCE_MACS = [
    ("resnet18-cifar", (3, 32, 32), 555.42, 11.17),
    ("resnet34-cifar", (3, 32, 32), 1159.40, 21.28),
    ("resnet18-paper", (3, 32, 32), 35.31, None),
    ("resnet34-paper", (3, 32, 32), 73.06, None),
    ("resnet18-paper", (1, 28, 28), 32.71, None),
    ("resnet34-paper", (1, 28, 28), 69.35, None),
    ("nin", (3, 32, 32), 222.49, 0.967),
    ("resnet20", (3, 32, 32), 40.55, 0.270),
]


@pytest.mark.parametrize("arch, shape, macs_m, params_m", REFERENCE_MACS)
def test_reference_mac_counts(arch, shape, macs_m, params_m):
    net = build(arch, in_channels=shape[0], num_classes=10, input_size=shape[1])
    total = count_ops(net, shape).total
    assert round(total["macs"] / 1e6, 2) == macs_m
    if params_m is not None:
        assert round(total["params"] / 1e6, 3 if params_m < 1 else 2) == params_m
    assert total["params"] == sum(v.size for k, v in net.state_dict().items() if "running" not in k)


@pytest.mark.parametrize("depth", [18, 34])
def test_paper_variant_params_add_the_layer1_shortcut(depth):
    # docs/background.md lists 11.17 M / 21.28 M for both variants; the "paper" variant's layer1
    # starts at stride 2 and so has a 1x1 shortcut conv (64*64) and its BN (2*64): +4,224.
    cifar = count_ops(build(f"resnet{depth}-cifar", 3, 10)).total["params"]
    paper = count_ops(build(f"resnet{depth}-paper", 3, 10)).total["params"]
    assert paper - cifar == 64 * 64 + 2 * 64


def test_nin_bias_adds_and_presets():
    total = count_ops(build("nin", 3, 10), (3, 32, 32)).total
    assert round(total["bias_adds"] / 1e6, 2) == 0.63
    assert total["fvcore"] == total["macs"] and total["flops"] == 2 * total["macs"]


def test_thop_preset_counts_two_ops_per_bn_element():
    net = build("resnet18-cifar", 3, 10)
    counts = count_ops(net, (3, 32, 32))
    bn_elems = sum(np.prod(r["out_shape"]) for r in counts.rows if r["type"] == "BatchNorm2d")
    assert counts.total["thop"] == counts.total["macs"] + 2 * bn_elems
    assert round(counts.total["thop"] / 1e9, 2) == 0.56


def test_batch_scales_counts_but_not_params():
    net = build("lenet", 1, 10)
    one, eight = count_ops(net, (1, 1, 28, 28)).total, count_ops(net, (8, 1, 28, 28)).total
    assert eight["macs"] == 8 * one["macs"] and eight["params"] == one["params"]


@pytest.mark.parametrize("arch", ["resnet18-paper", "nin", "lenet"])
def test_fold_batchnorm_preserves_outputs(arch):
    net = randomize(build(arch, 1, 10))
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, BatchNorm2d) for _, m in folded.body.modules())
    x = np.random.default_rng(1).normal(size=(3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(folded(x), net(x), rtol=1e-4, atol=1e-4)
    if arch.startswith("resnet"):
        assert count_ops(folded).total["bn_ops"] == 0
        assert count_ops(folded).total["macs"] == count_ops(net).total["macs"]


@pytest.mark.parametrize("method", ["im2col", "mec", "direct"])
def test_layouts_and_methods_agree(method):
    net = randomize(build("resnet18-paper", 1, 10))
    x = np.random.default_rng(2).normal(size=(2, 1, 28, 28)).astype(np.float32)
    ref = net(x)
    net.set_method(method)
    net.layout = "NHWC"
    np.testing.assert_allclose(net(x), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net(x.transpose(0, 2, 3, 1), layout="NHWC"), ref, rtol=1e-4, atol=1e-4)


def test_lenet_flatten_order_is_chw_in_both_layouts():
    net = randomize(build("lenet", 1, 10))
    x = np.random.default_rng(3).normal(size=(2, 1, 28, 28)).astype(np.float32)
    ref = net(x)
    net.layout = "NHWC"
    np.testing.assert_allclose(net(x), ref, rtol=1e-5, atol=1e-5)


def test_bad_input_shape_is_named():
    net = build("lenet", 1, 10)
    with pytest.raises(ShapeError, match=r"\(1, 28, 28\)"):
        net(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(ConfigError, match="unknown architecture"):
        build("vgg16")


def test_repr_has_one_line_per_layer_with_shapes():
    text = repr(build("resnet18-paper", 1, 10))
    assert text.splitlines()[0].startswith("Network(resnet18-paper")
    assert "layer4.1.add_relu" in text and "-> (512, 1, 1)" in text and "-> (10,)" in text


def test_cli_ops_json(capsys):
    assert main(["ops", "--arch", "resnet18-cifar", "--input", "3x32x32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert round(out["total"]["macs"] / 1e6, 2) == 555.42
    assert {"name", "type", "macs"} <= set(out["layers"][0])


def test_cli_ops_table(capsys):
    assert main(["ops", "--arch", "nin", "--input", "1x28x28"]) == 0
    out = capsys.readouterr().out
    assert "conv9" in out and "total" in out


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_runs(arch):
    net = build(arch, 1, 7)
    assert net(np.zeros((1,) + net.input_shape, np.float32)).shape == (1, 7)
