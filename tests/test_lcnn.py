"""LCNN (lookup-based convolution): the layer, its kernel, its counts and files; the conversion."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tabconv_np
from tabconv_np import pairs
from tabconv_np.blocks import Sequential
from tabconv_np.errors import ConfigError, ShapeError
from tabconv_np.kernels import lcnn_kernels
from tabconv_np.layers import Conv2d
from tabconv_np.lcnn import LCNNConv2d
from tabconv_np.network import Network
from tabconv_np.ops import count_ops
from tabconv_np.reference import conv2d_naive

PAIR = next(p for p in pairs.PAIRS if p.name == "lcnn_conv")


@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25, deadline=None)
def test_layer_equals_dense_conv_of_rebuilt_filters(data, seed):
    """Shapes, strides, padding (int, pair, 4-tuple), dilation, both layouts."""
    pairs.run(PAIR, lambda lo, hi: data.draw(st.integers(lo, hi)), np.random.default_rng(seed))


def _random_layer(rng, C_in=5, C_out=7, k=6, s=2, **geo):
    layer = LCNNConv2d(C_in, C_out, 3, atoms=k, sparsity=s, **geo)
    p = layer.params
    p["dictionary"][...] = rng.standard_normal(p["dictionary"].shape)
    p["indices"][...] = rng.integers(0, k, p["indices"].shape)
    p["coefs"][...] = rng.standard_normal(p["coefs"].shape)
    p["bias"][...] = rng.standard_normal(C_out)
    return layer


def test_serial_equals_parallel_bitwise():
    rng = np.random.default_rng(3)
    layer = _random_layer(rng, C_in=8, C_out=16, k=12, s=3, stride=2, padding=1)
    x = rng.standard_normal((3, 8, 17, 15)).astype(np.float32)
    P = layer.padded_maps(x, "NCHW")
    p = layer.params
    outs = []
    for fn in lcnn_kernels.lookup_accumulate:
        out = np.empty((3, 9, 8, 16), np.float32)
        fn(P, p["indices"], p["coefs"], p["bias"], 2, 2, 1, 1, out)
        outs.append(out)
    assert np.array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))


def test_identity_dictionary_is_the_exact_convolution():
    """k = C_in atoms, the identity, s = C_in pairs: the filters are the conv's own."""
    rng = np.random.default_rng(0)
    conv = Conv2d(4, 6, 3, stride=2, padding=1)
    conv.params["weight"][...] = rng.standard_normal(conv.params["weight"].shape)
    conv.params["bias"][...] = rng.standard_normal(6)
    W = conv.params["weight"]
    idx = np.broadcast_to(np.arange(4, dtype=np.int32), (6, 3, 3, 4))
    layer = LCNNConv2d.from_parts(conv, np.eye(4, dtype=np.float32), idx, W.transpose(0, 2, 3, 1),
                                  conv.params["bias"])
    np.testing.assert_array_equal(layer.filters(), W.astype(np.float64))
    x = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    want = conv2d_naive(x, W, conv.params["bias"], 2, 1)
    np.testing.assert_allclose(layer.forward(x, "NCHW"), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.forward(x.transpose(0, 2, 3, 1), "NHWC"),
                               want.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_op_counts_by_hand():
    """C_in 5, C_out 7, 3x3, stride 2, padding 1, k 6, s 2, input 5x9x9 -> output 7x5x5:
    dictionary 9*9*6*5 = 2430 MACs, lookups 5*5*7*2*3*3 = 3150, bias 175."""
    layer = _random_layer(np.random.default_rng(0), stride=2, padding=1)
    assert layer.stage_macs((5, 9, 9)) == (2430, 3150)
    c = count_ops(layer, (5, 9, 9))
    row = c.rows[0]
    assert (row["macs"], row["bias_adds"]) == (2430 + 3150, 175)
    assert row["params"] == 6 * 5 + 2 * 7 * 9 * 2 + 7
    assert row["storage_bytes"] == 4 * (6 * 5 + 2 * 7 * 9 * 2 + 7)
    assert c.total["multiplies"] == 5580 and c.total["full"] == 5580 + 175
    assert count_ops(layer, (2, 5, 9, 9)).total["macs"] == 2 * 5580


def test_file_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    layer = _random_layer(rng, padding=(1, 0), dilation=2)
    net = Network(Sequential([("0", layer)]), (5, 11, 12))
    path = tmp_path / "lcnn.h5"
    tabconv_np.save(net, path)
    back = tabconv_np.load(path)
    x = rng.standard_normal((2, 5, 11, 12)).astype(np.float32)
    got = back.body.children["0"]
    assert isinstance(got, LCNNConv2d) and got.config() == layer.config()
    np.testing.assert_array_equal(back.body(x), net.body(x))


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="sparsity"):
        LCNNConv2d(4, 4, 3, atoms=2, sparsity=3)
    layer = _random_layer(np.random.default_rng(0))
    layer.params["indices"][0, 0, 0, 0] = 6
    with pytest.raises(ShapeError, match="indices"):
        layer.forward(np.zeros((1, 5, 6, 6), np.float32), "NCHW")


# ------------------------------------------------------------------ conversion
import os  # noqa: E402

from tabconv_np.conversion import convert  # noqa: E402
from tabconv_np.conversion.lcnn import fit_lcnn, omp  # noqa: E402
from tabconv_np.fold import fold_batchnorm  # noqa: E402

WEIGHTS = os.path.join(os.path.dirname(__file__), os.pardir, "weights")
SWITCHES = [0, 1, 1, 1, 1, 1, 1, 1, 1, 0]


@pytest.fixture(scope="module")
def data(r18_sample):
    return r18_sample(120, 200)


def _conv(net, path):
    return dict(fold_batchnorm(net).body.modules())[path]


def test_omp_recovers_a_sparse_combination():
    rng = np.random.default_rng(0)
    D = rng.standard_normal((12, 6))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    V = 2.0 * D[[3, 7]] + D[[5, 1]]                    # rows: 2*D3 + D5, 2*D7 + D1
    idx, coef = omp(V, D, 2)
    assert [sorted(r) for r in idx.tolist()] == [[3, 5], [1, 7]]
    np.testing.assert_allclose(np.einsum("nt,ntm->nm", coef, D[idx]), V, atol=1e-9)


def test_full_dictionary_conversion_is_exact(data):
    """k = s = C_in: every filter vector is reconstructed exactly (real ResNet-18 weights)."""
    conv = _conv(data[0], "layer1.0.conv1")
    C = conv.in_channels
    layer = fit_lcnn(conv, C, C, 0, np.random.default_rng(0))
    W = conv.params["weight"].astype(np.float64)
    assert np.linalg.norm(layer.filters() - W) <= 1e-5 * np.linalg.norm(W)


def test_dictionary_learning_is_deterministic_and_improves(data):
    conv = _conv(data[0], "layer2.0.conv1")
    a, b = (fit_lcnn(conv, 16, 2, 4, np.random.default_rng(7)) for _ in range(2))
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    W = conv.params["weight"].astype(np.float64)
    err = {it: np.linalg.norm(fit_lcnn(conv, 16, 2, it, np.random.default_rng(7)).filters() - W)
           for it in (0, 4)}
    assert err[4] < err[0]


def test_conversion_keeps_accuracy_refit_helps_and_round_trips(data, tmp_path):
    net, xc, xt, yt = data
    exact = np.mean(net.predict(xt).argmax(1) == yt)
    res = {r: convert(net, xc, method="lcnn", atoms=32, sparsity=2, iters=4, refine=r,
                      switches=SWITCHES, progress=False) for r in (None, "exact")}
    acc = {r: np.mean(v.network.predict(xt).argmax(1) == yt) for r, v in res.items()}
    assert acc["exact"] >= exact - 0.06 and acc["exact"] >= acc[None] - 0.01
    err = {r: np.mean([rec["rel_error"] for rec in v.layers if "k" in rec]) for r, v in res.items()}
    assert err["exact"] < err[None]
    net2 = res["exact"].network
    types = {type(m).__name__ for _, m in net2.body.modules()}
    assert "LCNNConv2d" in types
    assert count_ops(net2).total["macs"] < count_ops(res["exact"].exact).total["macs"]
    path = tmp_path / "lcnn.h5"
    tabconv_np.save(net2, path)
    x = net2.normalize(xt[:4])
    np.testing.assert_array_equal(tabconv_np.load(path)(x), net2(x))


@pytest.mark.parametrize("kw, match", [
    (dict(atoms=10 ** 6), r"atoms k = 1000000 for layer1\.0\.conv1 exceeds"),
    (dict(atoms=4, sparsity=5), r"sparsity s = 5 for layer1\.0\.conv1 exceeds its atoms k = 4"),
    (dict(atoms=0), "atoms"), (dict(refine="local"), "refine")])
def test_bad_settings_are_refused_naming_layer_and_value(data, kw, match):
    net, xc, _, _ = data
    with pytest.raises(ConfigError, match=match):
        convert(net, xc[:8], method="lcnn", switches=SWITCHES, progress=False, **kw)


def test_grouped_convolution_is_refused():
    from tabconv_np.conversion.lcnn import LCNN, LCNNSettings
    with pytest.raises(ConfigError, match="b.conv is a grouped convolution"):
        LCNN().resolve("b.conv", Conv2d(4, 4, 3, groups=2), {"atoms": 2, "sparsity": 1}, LCNNSettings())


def test_cli_convert_ops_and_eval(tmp_path, capsys):
    """``tabconv convert --method lcnn`` with per-layer values; ``ops`` and ``eval`` read the result."""
    from tabconv_np.cli import main
    out = tmp_path / "lcnn.h5"
    model = os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5")
    assert main(["convert", model, "-o", str(out), "--method", "lcnn", "--atoms", "layer4.*=16,*=8",
                 "--sparsity", "1", "--switches", "0,0,0,0,0,0,0,1,1,0", "--dataset", "sample",
                 "--calib", "40", "--json"]) == 0
    cap = capsys.readouterr()
    assert "--method lcnn --atoms 'layer4.*=16,*=8' --sparsity 1 --refine exact" in cap.err
    import json
    d = json.loads(cap.out)
    assert d["op_reduction"]["full"]["reduction"] > 0
    assert main(["ops", str(out)]) == 0 and "LCNNConv2d" in capsys.readouterr().out
    assert main(["eval", str(out), "--limit", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.5
    assert main(["convert", model, "-o", str(tmp_path / "x.h5"), "--method", "lcnn", "--eps", "0.3",
                 "--dataset", "sample"]) == 2
    assert "--eps applies to --method rsdtr, not lcnn" in capsys.readouterr().err


def test_cli_defaults_are_the_methods_defaults():
    from tabconv_np.cli.convert import METHOD_DEFAULTS
    from tabconv_np.conversion import LCNNSettings, RSDTRSettings
    lc, rs = LCNNSettings(), RSDTRSettings()
    assert METHOD_DEFAULTS["lcnn"] == {"atoms": str(lc.atoms), "sparsity": str(lc.sparsity),
                                       "refine": str(lc.refine).lower()}
    assert METHOD_DEFAULTS["rsdtr"] == {"eps": str(rs.eps), "convs": rs.convs, "refine": str(rs.refine).lower()}
