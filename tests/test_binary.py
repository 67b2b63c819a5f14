"""Binary and ternary layers and methods: closed forms, bits, kernels, costs, files, conversion, CLI, errors.

The hypothesis equivalences are pairs in tests/test_reference_pairs.py:
``xnor_conv`` (XNOR/AND + popcount equals the float conv of the +-1 tensors,
bitwise, padding and zeros binarised to -1) and ``binary_conv`` (float inputs,
against the dense conv of ``alpha * T``).
"""
import json
import os

import numpy as np
import pytest

import tabconv_np
from tabconv_np.binary import (BinaryConv2d, BinaryLinear, binarize_weights, pack_bits, pack_rows,
                               ternarize_weights, unpack_bits, xnor_conv, xnor_products)
from tabconv_np.blocks import Sequential
from tabconv_np.cli import main
from tabconv_np.conversion import convert, skeleton
from tabconv_np.conversion.binary import BinarySettings
from tabconv_np.errors import ConfigError, ShapeError
from tabconv_np.fold import fold_batchnorm
from tabconv_np.functional import conv2d
from tabconv_np.kernels import binary_kernels as K
from tabconv_np.layers import Conv2d, Flatten, Linear
from tabconv_np.network import Network
from tabconv_np.ops import count_ops
from tabconv_np.reference import xnor_conv_naive

R18 = os.path.join(os.path.dirname(__file__), os.pardir, "weights", "resnet18-paper_fashion-mnist.h5")
SWITCHES = [1, 0, 1, 0, 0, 0, 1, 0, 0, 1]          # conv1, layer1.1, layer3.1, fc: fast, and both ends


@pytest.fixture(scope="module")
def data(r18_sample):
    return r18_sample(40, 200)


@pytest.fixture(scope="module")
def real(data):
    """A BN-folded 3x3 conv (64 -> 64) of the shipped ResNet-18 and the real activations entering it."""
    net = fold_batchnorm(data[0])
    mods = dict(net.body.modules())
    h = net.normalize(data[1][:8])
    for n, m in net.body.children.items():
        if n.startswith("layer"):
            break
        h = m.forward(h, net.layout)
    return mods["layer1.0.conv1"], np.ascontiguousarray(h, np.float32)


def test_closed_forms_and_bits():
    """XNOR-Net's alpha minimises ||W - alpha sign(W)|| (checked against neighbours); TWN keeps
    |W| > 0.7 mean|W| with alpha the mean kept; bits round-trip with a ragged last word."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((5, 130)).astype(np.float32)
    s, m, a = binarize_weights(W)
    assert m is None and np.array_equal(s, W > 0)
    np.testing.assert_allclose(a, np.abs(W).mean(axis=1), rtol=1e-6)
    B = np.where(s, 1.0, -1.0)
    err = lambda al: np.linalg.norm(W - al[:, None] * B, axis=1)        # noqa: E731
    assert np.all(err(a) <= err(a * 1.01)) and np.all(err(a) <= err(a * 0.99))
    s, m, a = ternarize_weights(W)
    np.testing.assert_array_equal(m, np.abs(W) > 0.7 * np.abs(W).mean(axis=1, keepdims=True))
    np.testing.assert_allclose(a, [np.abs(w[k]).mean() for w, k in zip(W, m)], rtol=1e-6)
    assert ternarize_weights(np.zeros((1, 9)))[2][0] == 1                  # a zero filter: no NaN
    P = pack_bits(s)
    assert P.shape == (5, 3) and P.dtype == np.uint64 and not np.any(P[:, -1] >> np.uint64(2))
    np.testing.assert_array_equal(unpack_bits(P, 130), s)
    np.testing.assert_array_equal(pack_rows(np.where(s, 0.5, -0.0).astype(np.float32)), P)   # -0.0 is -1


def test_real_layer_both_modes(real):
    """On a real ResNet-18 conv and its real input: float inputs equal the conv of alpha*sign(W); binary
    inputs equal alpha*beta times the exact XNOR integers; the weight-only error is what it is."""
    conv, x = real
    lay = BinaryConv2d.from_conv(conv, "binary", "float")
    Wd = lay.dense_weight().reshape(conv.params["weight"].shape)
    y = lay.forward(x, "NCHW")
    geo = (conv.stride, conv.padding)
    np.testing.assert_allclose(y, conv2d(x, Wd, conv.params["bias"], *geo), rtol=1e-4, atol=1e-4)
    exact = conv.forward(x, "NCHW")
    rel = np.linalg.norm(y - exact) / np.linalg.norm(exact)
    assert 0.2 < rel < 1.0, rel                           # binarising the weights is a real change
    beta = float(np.abs(x).mean())
    full = BinaryConv2d.from_conv(conv, "ternary", "binary", beta)
    p = full.params
    dots = xnor_conv(x, p["weight_sign"], p["weight_mask"], (64, 64, 3, 3), *geo)
    np.testing.assert_array_equal(dots, xnor_conv_naive(x, p["weight_sign"], p["weight_mask"], (64, 64, 3, 3), *geo))
    want = dots * (p["weight_scale"] * np.float32(beta))[None, :, None, None] + p["bias"][None, :, None, None]
    np.testing.assert_allclose(full.forward(x, "NCHW"), want, rtol=1e-6, atol=1e-5)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(full.forward(nhwc, "NHWC"), full.forward(x, "NCHW").transpose(0, 2, 3, 1))
    bad = x.copy()
    bad[0, 3, 5, 5] = np.nan                              # NaN where a window reads it, nowhere else
    yb = full.forward(bad, "NCHW")
    assert np.isnan(yb[0, :, 2:4, 2:4]).all() and np.isnan(yb).sum() == 64 * 4       # stride 2


def test_serial_equals_parallel_bitwise():
    """Several row tasks (CHUNK), several words, a ragged last word: both entries equal the reference."""
    rng = np.random.default_rng(2)
    R, D, M = 3 * K.CHUNK + 5, 200, 7
    X = rng.standard_normal((R, D)).astype(np.float32)
    S, T = (pack_bits(rng.random((M, D)) < 0.5) for _ in range(2))
    A = [np.empty((R, 4), np.uint64) for _ in range(2)]
    K.pack_signs.serial(X, A[0])
    K.pack_signs.parallel(X, A[1])
    np.testing.assert_array_equal(A[0], A[1])
    want = np.where(X > 0, 1, -1) @ np.where(unpack_bits(S, D), 1, -1).T
    nnz = unpack_bits(T, D).sum(1).astype(np.int32)
    want_t = np.where(X > 0, 1, -1) @ (np.where(unpack_bits(S, D), 1, -1) * unpack_bits(T, D)).T
    for entry in ("serial", "parallel"):
        out = np.empty((R, M), np.int32)
        getattr(K.xnor_gemm, entry)(A[0], S, S, np.full(M, D, np.int32), False, out)
        np.testing.assert_array_equal(out, want)
        getattr(K.xnor_gemm, entry)(A[0], S, T, nnz, True, out)
        np.testing.assert_array_equal(out, want_t)
    np.testing.assert_array_equal(xnor_products(X, S, T), want_t)


def test_op_counts_of_a_small_layer():
    """3 -> 4 channels, 3x3, padding 1, 5x5 input: D = 27 (one word), 25 positions, 100 outputs."""
    conv = Conv2d(3, 4, 3, padding=1)
    conv.params["weight"][...] = np.random.default_rng(0).standard_normal((4, 3, 3, 3))
    base = {"dequant_mults": 100, "bias_adds": 100}
    assert BinaryConv2d.from_conv(conv, "binary", "float").cost((3, 5, 5)) == {"adds": 2700, **base}
    assert BinaryConv2d.from_conv(conv, "binary", "binary").cost((3, 5, 5)) == {
        "binarize_ops": 675, "popcounts": 100, "bit_ops": 100, "adds": 100, **base}
    assert BinaryConv2d.from_conv(conv, "ternary", "binary").cost((3, 5, 5))["bit_ops"] == 200
    net = Network(Sequential([("c", BinaryConv2d.from_conv(conv, "ternary", "binary")), ("f", Flatten()),
                              ("fc", BinaryLinear(100, 10, "binary", "binary"))]), (3, 5, 5))
    t = count_ops(net).total
    # fc: 100 inputs = 2 words per output, 10 outputs
    assert (t["popcounts"], t["bit_ops"], t["binarize_ops"], t["macs"]) == (100 + 20, 200 + 20, 675 + 100, 0)
    assert t["full"] == 675 + 100 + 200 + 20 + 100 + 20 + 100 + 20 + 2 * (100 + 10)   # one op each
    assert "popcounts" in count_ops(net).table()


def test_files_round_trip_and_damaged_bits(tmp_path):
    rng = np.random.default_rng(4)
    conv, lin = Conv2d(2, 3, 3, stride=2, padding=1), Linear(27, 4)
    for m in (conv, lin):
        for v in m.params.values():
            v[...] = rng.standard_normal(v.shape)
    body = Sequential([("c", BinaryConv2d.from_conv(conv, "ternary", "binary", 0.5)), ("f", Flatten()),
                       ("fc", BinaryLinear.from_linear(lin, "binary", "float"))])
    net = Network(body, (2, 6, 6))
    path = tmp_path / "b.h5"
    tabconv_np.save(net, path)
    back = tabconv_np.load(path)
    x = rng.random((3, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(back(x), net(x))
    assert [type(m).__name__ for _, m in back.body.modules()][1:] == ["BinaryConv2d", "Flatten", "BinaryLinear"]
    fc = dict(back.body.modules())["fc"]                 # the unpacked weights follow the bits
    xf = rng.standard_normal((2, 27)).astype(np.float32)
    fc.forward(xf, "NCHW")
    fc.params["weight_sign"][0, 0] ^= np.uint64(1)
    np.testing.assert_allclose(fc.forward(xf, "NCHW"), xf @ fc.dense_weight().T + fc.params["bias"], rtol=1e-5,
                               atol=1e-5)
    c = dict(back.body.modules())["c"]
    c.params["weight_mask"][0, -1] |= np.uint64(1) << np.uint64(40)        # past D = 18
    with pytest.raises(ShapeError, match="weight_mask has bits set past the 18"):
        c.forward(x, "NCHW")


def test_convert_keeps_the_ends_exact_or_not(data, tmp_path):
    net, xc, xt, yt = data
    res = convert(net, xc, method="ternary", switches=SWITCHES, progress=False)
    mods = dict(res.network.body.modules())
    assert type(mods["conv1"]) is Conv2d and type(mods["fc"]) is Linear
    assert isinstance(mods["layer1.1.conv1"], BinaryConv2d) and mods["layer1.1.conv1"].activations == "float"
    assert (res.network.predict(xt).argmax(1) == yt).mean() > 0.7
    both = convert(net, xc, method="binary", switches=SWITCHES, ends="binary", activations="binary",
                   refine="exact", progress=False)
    mods = dict(both.network.body.modules())
    assert isinstance(mods["conv1"], BinaryConv2d) and isinstance(mods["fc"], BinaryLinear)
    assert mods["conv1"].activations == "binary" and mods["conv1"].params["input_scale"][0] != 1
    assert both.network.meta["binary"]["end_layers"] == ["conv1", "fc"]
    t = count_ops(both.network).total
    sk = skeleton(net, "binary", switches=SWITCHES, ends="binary", activations="binary")
    assert t["popcounts"] > 0 and count_ops(sk).total == t                # counting needs no data


@pytest.mark.parametrize("kw, match", [
    (dict(activations="ternary"), "activations for layer1.1.conv1 .*'ternary'"),
    (dict(activations={"layer1.1.*": "int8", "*": "float"}), "activations for layer1.1.conv1 .*'int8'"),
    (dict(ends="middle"), "ends must be one of .*'middle'"),
    (dict(refine="local"), "refine must be 'none' or 'exact' .*'local'"),
])
def test_bad_settings_name_the_layer_and_value(data, kw, match):
    net, xc, _, _ = data
    with pytest.raises(ConfigError, match=match):
        convert(net, xc[:8], method="binary", switches=SWITCHES, progress=False, **kw)


def test_bad_layers():
    grouped = Network(Sequential([("a", Conv2d(4, 4, 3)), ("b", Conv2d(4, 4, 3, groups=2)), ("c", Conv2d(4, 4, 3))]), (4, 9, 9))
    with pytest.raises(ConfigError, match="b is a grouped convolution"):
        convert(grouped, np.zeros((4, 4, 9, 9), np.float32), method="binary", progress=False)
    with pytest.raises(ConfigError, match="BinaryConv2d: weights"):
        BinaryConv2d(2, 2, 3, weights="quaternary")
    with pytest.raises(ConfigError, match="BinaryLinear: activations"):
        BinaryLinear(2, 2, activations="int8")
    with pytest.raises(ConfigError, match="grouped"):
        BinaryConv2d.from_conv(Conv2d(4, 4, 3, groups=2))


def test_cli_convert_ops_eval(tmp_path, capsys):
    from tabconv_np.cli.convert import METHOD_DEFAULTS
    d = BinarySettings()
    for m in ("binary", "ternary"):
        assert METHOD_DEFAULTS[m] == {"activations": d.activations, "ends": d.ends, "refine": str(d.refine).lower()}
    out = tmp_path / "b.h5"
    assert main(["convert", R18, "-o", str(out), "--method", "binary", "--dataset", "sample", "--calib", "40",
                 "--activations", "layer3.*=binary,*=float", "--switches", ",".join(map(str, SWITCHES))]) == 0
    text = capsys.readouterr().out
    assert "--method binary --activations 'layer3.*=binary,*=float' --ends exact --refine none" in text
    assert "M popcounts" in text
    mods = dict(tabconv_np.load(out).body.modules())
    assert mods["layer3.1.conv2"].activations == "binary" and mods["layer1.1.conv2"].activations == "float"
    assert main(["ops", str(out)]) == 0
    assert "popcounts" in capsys.readouterr().out
    assert main(["eval", str(out), "--dataset", "sample", "--limit", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.3
    assert main(["convert", R18, "-o", str(tmp_path / "c.h5"), "--method", "ternary", "--dataset", "sample",
                 "--calib", "40", "--activations", "sign"]) == 2
    assert "activations for layer1.0.conv1" in capsys.readouterr().err
    assert main(["convert", R18, "-o", str(tmp_path / "c.h5"), "--ends", "binary"]) == 2
    assert "--ends applies to --method binary, ternary, not tabconv" in capsys.readouterr().err
    assert not (tmp_path / "c.h5").exists()
