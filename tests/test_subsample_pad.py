"""The option-A shortcut (``SubsamplePad``) and ResNet-20 against PyTorch; files, counts, bad configs."""
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tabconv_np
from tabconv_np.blocks import BasicBlock, Sequential
from tabconv_np.errors import ConfigError, ShapeError
from tabconv_np.models import build
from tabconv_np.network import Network
from tabconv_np.ops import count_ops
from tabconv_np.reshapes import SubsamplePad
from helpers import randomize

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")


def _torch():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, WEIGHTS)
    try:
        import models_torch
    finally:
        sys.path.remove(WEIGHTS)
    return torch, models_torch


@given(c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9), stride=st.integers(1, 3),
       before=st.integers(0, 4), after=st.integers(0, 4), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_layer_equals_torch_in_both_layouts(c, h, w, stride, before, after, seed):
    torch, mt = _torch()
    x = np.random.default_rng(seed).standard_normal((2, c, h, w)).astype(np.float32)
    want = mt.ShortcutA(stride, before, after)(torch.from_numpy(x)).numpy()
    layer = SubsamplePad(stride, before, after)
    np.testing.assert_array_equal(layer.forward(x, "NCHW"), want)
    nhwc = layer.forward(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "NHWC")
    np.testing.assert_array_equal(nhwc.transpose(0, 3, 1, 2), want)
    assert layer.out_shape((c, h, w)) == want.shape[1:]


def test_counts_nothing_and_round_trips(tmp_path):
    layer = SubsamplePad(2, 3, 5)
    row = count_ops(layer, (4, 7, 7)).rows[0]
    assert row["macs"] == 0 and row["params"] == 0 and count_ops(layer, (4, 7, 7)).cost("full") == 0
    net = Network(Sequential([("0", layer)]), (4, 7, 7))
    tabconv_np.save(net, tmp_path / "s.h5")
    back = tabconv_np.load(tmp_path / "s.h5")
    assert back.body.children["0"].config() == {"type": "SubsamplePad", "stride": 2, "before": 3, "after": 5}
    x = np.random.default_rng(0).standard_normal((3, 4, 7, 7)).astype(np.float32)
    np.testing.assert_array_equal(back.body(x), net.body(x))


def test_bad_configs_name_the_layer():
    with pytest.raises(ConfigError, match="SubsamplePad: stride"):
        SubsamplePad(0)
    with pytest.raises(ConfigError, match="SubsamplePad: before"):
        SubsamplePad(2, -1)
    with pytest.raises(ShapeError, match="SubsamplePad"):
        SubsamplePad(2).out_shape((4, 7))
    with pytest.raises(ConfigError, match="cannot narrow 32 channels to 16"):
        BasicBlock(32, 16, 2, shortcut="pad")
    with pytest.raises(ConfigError, match="shortcut must be one of"):
        BasicBlock(16, 32, 2, shortcut="B")


def test_resnet20_is_he_et_al():
    """0.27 M parameters (269,722 at 3 input channels); 40.55 M MACs
    at 3x32x32 (the RSDTR paper's figure); the option-A shortcuts carry nothing."""
    net = build("resnet20", 3, 10)
    total = count_ops(net, (3, 32, 32)).total
    assert total["params"] == 269_722 and round(total["macs"] / 1e6, 2) == 40.55
    mods = dict(net.body.modules())
    assert [p for p, m in mods.items() if isinstance(m, SubsamplePad)] == ["layer2.0.downsample",
                                                                           "layer3.0.downsample"]
    assert mods["layer2.0.downsample"].config() == {"type": "SubsamplePad", "stride": 2, "before": 8,
                                                    "after": 8}


def test_resnet20_equals_torch_through_files_fold_and_plan(tmp_path):
    torch, mt = _torch()
    net = randomize(build("resnet20", 1, 10), seed=3)
    model = mt.torch_from_network(net)
    x = np.random.default_rng(1).standard_normal((4, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    tabconv_np.save(net, tmp_path / "r20.h5")
    back = tabconv_np.load(tmp_path / "r20.h5")
    tol = 1e-4 * np.abs(want).max()
    for got in (net(x), back(x), tabconv_np.fold_batchnorm(back)(x), tabconv_np.prepare(back)(x)):
        np.testing.assert_allclose(got, want, atol=tol, rtol=0)
