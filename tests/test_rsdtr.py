"""RSDTR (tensor-ring convolution): the layer, TR-SVD and its search, counts, files, the conversion."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tabconv_np
from tabconv_np import pairs
from tabconv_np.blocks import Sequential
from tabconv_np.conversion import convert
from tabconv_np.conversion import skeleton
from tabconv_np.conversion.rsdtr import (RSDTR, RSDTRSettings, compression_ratios, decompose, ring_growth,
                                         rsdtr_layer, tr_svd)
from tabconv_np.data import load_dataset
from tabconv_np.errors import ConfigError
from tabconv_np.fold import fold_batchnorm
from tabconv_np.layers import Conv2d
from tabconv_np.network import Network
from tabconv_np.ops import count_ops
from tabconv_np.rsdtr import RSDTRConv2d, rebuild_kernel

PAIR = next(p for p in pairs.PAIRS if p.name == "rsdtr_conv")
WEIGHTS = os.path.join(os.path.dirname(__file__), os.pardir, "weights")


@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_layer_equals_dense_conv_of_rebuilt_kernel(data, seed):
    """Shapes, ranks, strides, padding (int, pair, 4-tuple), dilation, both layouts."""
    pairs.run(PAIR, lambda lo, hi: data.draw(st.integers(lo, hi)), np.random.default_rng(seed))


@pytest.fixture(scope="module")
def net():
    return tabconv_np.load(os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5"))


def _conv(net, path):
    return dict(fold_batchnorm(net).body.modules())[path]


def test_tr_svd_is_exact_as_eps_goes_to_zero_and_within_eps_otherwise(net):
    W = _conv(net, "layer1.0.conv2").params["weight"].astype(np.float64)
    T = W.transpose(1, 2, 3, 0)                                   # a shifted order, as the search tries
    for eps in (1e-9, 0.1, 0.3, 0.5):
        cores = tr_svd(T, eps, 1)
        err = np.linalg.norm(np.einsum("aib,bjc,ckd,dla->ijkl", *cores, optimize=True) - T) / np.linalg.norm(T)
        assert err <= eps * (1 + 1e-9) + 1e-12, (eps, err)
    cores, info = decompose(W, 1e-9)
    assert np.linalg.norm(rebuild_kernel(*cores) - W) <= 1e-8 * np.linalg.norm(W)


def test_search_keeps_the_smallest_and_reports_it(net):
    W = _conv(net, "layer2.0.conv1").params["weight"]
    cores, info = decompose(W, 0.3)
    r0, r1, r2, r3 = info["ranks"]
    assert [c.shape for c in cores] == [(r3, W.shape[0], r0), (r0, W.shape[1], r1), (r1, 3, r2), (r2, 3, r3)]
    size = sum(c.size for c in cores)
    assert info["candidates"] >= 4
    # every shift with r0 = 1 is a candidate: none of them is smaller
    for shift in range(4):
        order = [(shift + m) % 4 for m in range(4)]
        assert sum(c.size for c in tr_svd(W.astype(np.float64).transpose(order), 0.3, 1)) >= size
    assert np.linalg.norm(rebuild_kernel(*cores) - W) <= 0.3 * np.linalg.norm(W)
    again, info2 = decompose(W, 0.3)
    assert info2 == info and all(np.array_equal(a, b) for a, b in zip(cores, again))


def test_layer_of_a_trained_conv_at_tiny_eps_is_the_conv(net):
    conv = _conv(net, "layer2.0.conv1")
    layer, info = rsdtr_layer(conv, 1e-7)
    x = np.random.default_rng(0).standard_normal((2, conv.in_channels, 9, 9)).astype(np.float32)
    want = conv.forward(x, "NCHW")
    np.testing.assert_allclose(layer.forward(x, "NCHW"), want, atol=1e-4 * np.abs(want).max())
    assert info["kernel_error"] < 1e-6


def test_op_counts_by_hand():
    """C_in 5, C_out 7, 3x3, stride 2, padding 1, ranks (2, 3, 4, 5), input 5x9x9 -> 7x5x5:
    1: 81*5*2*3 = 2430; 2: 5*9*2*3*4*3 = 3240; 3: 25*2*4*5*3 = 3000; 4: 25*2*5*7 = 1750."""
    layer = RSDTRConv2d(5, 7, 3, stride=2, padding=1, ranks=(2, 3, 4, 5))
    assert layer.stage_macs((5, 9, 9)) == (2430, 3240, 3000, 1750)
    row = count_ops(layer, (5, 9, 9)).rows[0]
    assert (row["macs"], row["bias_adds"]) == (2430 + 3240 + 3000 + 1750, 175)
    assert row["params"] == 5 * 7 * 2 + 2 * 5 * 3 + 3 * 3 * 4 + 4 * 3 * 5 + 7


def test_file_round_trip():
    import tempfile
    rng = np.random.default_rng(1)
    layer = RSDTRConv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0, 2, 1), ranks=(2, 1, 3, 2))
    for v in layer.params.values():
        v[...] = rng.standard_normal(v.shape)
    net = Network(Sequential([("0", layer)]), (4, 8, 9))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r.h5")
        tabconv_np.save(net, path)
        back = tabconv_np.load(path)
    x = rng.standard_normal((2, 4, 8, 9)).astype(np.float32)
    assert back.body.children["0"].config() == layer.config()
    np.testing.assert_array_equal(back.body(x), net.body(x))


SWITCHES = [0, 1, 1, 1, 1, 1, 1, 1, 1, 0]
#: layer1 and layer2 only: the test stays short (layer4's 512-channel kernels take ~20 s each).
SMALL = [0, 1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_conversion_accuracy_errors_refit_and_blocks(net):
    xc, _ = load_dataset("sample", "train", limit=100)
    xt, yt = load_dataset("sample", "test", limit=200)
    exact = np.mean(net.predict(xt).argmax(1) == yt)
    plain = convert(net, xc, method="rsdtr", eps=0.3, switches=SMALL, larger="convert", progress=False)
    recs = [r for r in plain.layers if "ranks" in r]
    assert len(recs) == 10 and all(r["kernel_error"] <= 0.3 for r in recs)
    r = compression_ratios(plain.network, plain.exact)
    assert r["pcr"] > 1 and r["exact_macs"] == count_ops(plain.exact).total["macs"]
    assert np.mean(plain.network.predict(xt).argmax(1) == yt) >= exact - 0.05
    refit = convert(net, xc, method="rsdtr", eps=0.3, convs="blocks", refine="exact", switches=SMALL,
                    larger="convert", progress=False)
    kinds = {p: type(m).__name__ for p, m in refit.network.body.modules()}
    assert kinds["layer2.0.downsample.0"] == "Conv2d" and kinds["layer2.0.conv1"] == "RSDTRConv2d"
    err = {k: np.mean([r["rel_error"] for r in v.layers if r["name"].endswith("conv2")])
           for k, v in (("plain", plain), ("refit", refit))}
    assert err["refit"] < err["plain"]
    assert np.mean(refit.network.predict(xt).argmax(1) == yt) >= exact - 0.05


def test_cli_convert_with_per_layer_eps(tmp_path, capsys):
    from tabconv_np.cli import main
    out = tmp_path / "r.h5"
    model = os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5")
    assert main(["convert", model, "-o", str(out), "--method", "rsdtr", "--eps", "layer1.*=0.2,*=0.4",
                 "--convs", "blocks", "--switches", ",".join(map(str, SMALL)), "--dataset", "sample",
                 "--calib", "20"]) == 0
    text = capsys.readouterr().out
    assert "--method rsdtr --eps 'layer1.*=0.2,*=0.4' --convs blocks --refine none" in text
    meta = tabconv_np.load(out).meta["rsdtr"]["layers"]
    assert meta["layer1.0.conv1"]["eps"] == 0.2 and meta["layer2.1.conv2"]["eps"] == 0.4
    assert main(["ops", str(out)]) == 0 and "RSDTRConv2d" in capsys.readouterr().out


@pytest.mark.parametrize("eps", [0, 1, 1.5, -0.1, "x"])
def test_bad_eps_is_refused_naming_the_layer(net, eps):
    xc, _ = load_dataset("sample", "train", limit=8)
    with pytest.raises(ConfigError, match=r"eps for layer1\.0\.conv1 must be in \(0, 1\)"):
        convert(net, xc, method="rsdtr", eps=eps, switches=SWITCHES, progress=False)


def test_grouped_convolution_is_refused():
    with pytest.raises(ConfigError, match="b.conv is a grouped convolution"):
        RSDTR().resolve("b.conv", Conv2d(4, 4, 3, groups=2), {"eps": 0.3}, RSDTRSettings())


def test_ring_growth_by_hand():
    """The hand-counted layer of test_op_counts_by_hand against a dense 5->7 3x3 conv, stride 2:
    cores 70 + 30 + 36 + 60 = 196 of 315 kernel weights; MACs 10420 of 25*7*5*9 = 7875."""
    ring = RSDTRConv2d(5, 7, 3, stride=2, padding=1, ranks=(2, 3, 4, 5))
    conv = Conv2d(5, 7, 3, stride=2, padding=1)
    params, macs = ring_growth(ring, conv, (5, 9, 9))
    assert params == pytest.approx(196 / 315) and macs == pytest.approx(10420 / 7875)
    assert ring_growth(ring, conv)[1] is None


def test_larger_rings_are_kept_exact_and_said(net):
    """At eps 0.1 every ring of layer1 is larger than its kernel (trained 3x3 kernels are nearly
    full rank): the layers stay exact, the result says so, and nothing costs more than exact."""
    xc, _ = load_dataset("sample", "train", limit=20)
    layer1 = [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    kept = convert(net, xc, method="rsdtr", eps=0.1, convs="blocks", switches=layer1, progress=False)
    recs = {r["name"]: r for r in kept.layers if "ranks" in r}
    assert len(recs) == 4 and all("kept" in r and r["param_growth"] > 1 for r in recs.values())
    kinds = {p: type(m).__name__ for p, m in kept.network.body.modules()}
    assert all(kinds[p] == "Conv2d" for p in recs)
    assert sum("layer1.0.conv1 kept exact at eps 0.1" in n for n in kept.notes) == 1
    assert "note: layer1.1.conv2 kept exact" in kept.summary()
    assert all(r["rel_error"] < 1e-5 for r in recs.values())
    meta = kept.network.meta["rsdtr"]
    assert meta["larger"] == "keep" and "kept" in meta["layers"]["layer1.0.conv1"]
    assert count_ops(kept.network).total["macs"] == count_ops(kept.exact).total["macs"]
    forced = convert(net, xc, method="rsdtr", eps=0.1, convs="blocks", switches=layer1, larger="convert",
                     progress=False)
    assert all(type(m).__name__ == "RSDTRConv2d" for p, m in forced.network.body.modules() if p in recs)
    assert count_ops(forced.network).total["macs"] > count_ops(forced.exact).total["macs"]
    # at eps 0.5 layer1.0.conv1's ring is smaller on both counts (0.24x parameters, 0.42x MACs): converted
    half = convert(net, xc, method="rsdtr", eps=0.5, convs="blocks", switches=layer1, progress=False)
    rings = [r for r in half.layers if "ranks" in r]
    r = {r["name"]: r for r in rings}["layer1.0.conv1"]
    assert "kept" not in r and r["param_growth"] < 1 and r["mac_growth"] < 1
    assert all(r["mac_growth"] <= 1 and r["param_growth"] <= 1 for r in rings if "kept" not in r)
    # the data-free skeleton applies the parameter half of the rule
    sk = dict(skeleton(net, "rsdtr", eps=0.1, convs="blocks", switches=layer1).body.modules())
    assert all(type(sk[p]).__name__ == "Conv2d" for p in recs)


def test_bad_larger_is_refused():
    with pytest.raises(ConfigError, match="larger"):
        RSDTRSettings(larger="maybe")
