"""int8 post-training quantisation: kernels, layers, files, costs.

The kernels' agreement with their integer references over random inputs is in
tests/test_reference_pairs.py (pairs ``int8_quantize`` and ``int8_conv``);
the conversion method is tested in tests/test_convert_int8.py.
"""
import os

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tabconv_np
from tabconv_np import count_ops
from tabconv_np.blocks import Sequential
from tabconv_np.data import load_dataset
from tabconv_np.errors import ConfigError, ShapeError
from tabconv_np.fold import fold_batchnorm
from tabconv_np.functional import conv2d
from tabconv_np.int8 import (Int8Conv2d, Int8Linear, activation_qparams, conv_quantized, linear_quantized,
                             quantize, quantize_weights, warmup)
from tabconv_np.io import load, save
from tabconv_np.kernels import int8_kernels as K
from tabconv_np.layers import Conv2d, Flatten, Linear, ReLU
from tabconv_np.network import Network
from tabconv_np.reference import int8_conv_naive, quantize_naive
from tabconv_np.registry import from_config

WEIGHTS = os.path.join(os.path.dirname(__file__), os.pardir, "weights")


@pytest.fixture(scope="module")
def real():
    """A BN-folded conv (3x3, 64 -> 64) and the 1x1 stride-2 shortcut of the shipped ResNet-18,
    and real activations entering them."""
    net = fold_batchnorm(tabconv_np.load(os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5")))
    x, _ = load_dataset("sample", "train", limit=8)
    mods = dict(net.body.modules())
    names = [n for n, m in mods.items() if isinstance(m, Conv2d)]
    conv3 = mods[names[1]]
    short = next(mods[n] for n in names if mods[n].kernel_size == (1, 1))
    h = net.normalize(x)
    for n, m in net.body.children.items():                 # the input of the first residual stage
        if n.startswith("layer"):
            break
        h = m.forward(h, net.layout)
    return conv3, short, np.ascontiguousarray(h, np.float32)


def _int8_conv(conv, x, activations="asymmetric"):
    s, z = activation_qparams(x.min(), x.max(), activations)
    return Int8Conv2d.from_conv(conv, s, z, activations)


@pytest.mark.parametrize("activations", ["asymmetric", "symmetric"])
def test_int8_conv_is_the_float_conv_of_the_dequantised_tensors(real, activations):
    """The layer's only approximation is the rounding of weights and input: it equals the float
    conv of the dequantised weights on the dequantised input to float32 rounding, and stays within
    the quantisation bound of the float layer."""
    conv3, _, x = real
    layer = _int8_conv(conv3, x, activations)
    p = layer.params
    s, z = p["input_scale"][0], int(p["input_zero_point"][0])
    xd = (quantize(x, s, z, activations).astype(np.float32) - z) * s
    wd = layer.dequantized_weight().transpose(0, 3, 1, 2)
    y = layer.forward(x, "NCHW")
    ref = conv2d(xd, wd, p["bias"], conv3.stride, conv3.padding)
    absref = conv2d(np.abs(xd), np.abs(wd), None, conv3.stride, conv3.padding)
    np.testing.assert_array_less(np.abs(y - ref), 1e-5 * absref + 1e-6)
    exact = conv3.forward(x, "NCHW")
    # |x - xd| <= s/2 (x in the calibrated range), |w - wd| <= s_w/2 per channel
    bound = (conv2d(np.full_like(x, s / 2), np.abs(conv3.params["weight"]), None, conv3.stride, conv3.padding)
             + conv2d(np.abs(xd), np.broadcast_to(p["weight_scale"][:, None, None, None] / 2,
                                                  wd.shape).astype(np.float32), None, conv3.stride, conv3.padding))
    np.testing.assert_array_less(np.abs(y - exact), bound * 1.001 + 1e-5)
    rel = np.linalg.norm(y - exact) / np.linalg.norm(exact)
    assert rel < 0.02, rel


def test_weights_are_symmetric_per_channel_in_the_restricted_range():
    W = np.random.default_rng(0).standard_normal((5, 3, 3, 2)).astype(np.float32)
    W[2] = 0
    q, s = quantize_weights(W)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    assert all(np.abs(q[m]).max() == 127 for m in (0, 1, 3, 4)) and not q[2].any() and s[2] == 1
    assert np.all(np.abs(q * s[:, None, None, None] - W) <= s[:, None, None, None] / 2 * 1.0001)
    assert activation_qparams(0, 6.0) == (np.float32(6 / 255), 0)                # after a ReLU: z = 0
    s, z = activation_qparams(-1.0, 3.0)
    assert z == 64 and abs(s - 4 / 255) < 1e-9
    assert activation_qparams(-2.0, 1.0, "symmetric") == (np.float32(2 / 127), 0)
    with pytest.raises(ConfigError, match="activations"):
        activation_qparams(0, 1, "unsigned")


def test_quantisation_rounds_ties_to_even_and_clamps_like_rint():
    """The kernel's rounding (clamp, then +/- 1.5*2**23) against np.rint on every tie, its float32
    neighbours and values far beyond the range."""
    h = np.arange(-300, 300, 0.5, dtype=np.float32)
    x = np.concatenate([h, np.nextafter(h, np.float32(np.inf)), np.nextafter(h, np.float32(-np.inf)),
                        np.array([3e38, -3e38, 1e-40, -0.0], np.float32)])
    with np.errstate(over="ignore"):
        for z, mode in ((0, "asymmetric"), (77, "asymmetric"), (255, "asymmetric"), (0, "symmetric")):
            for s in (1.0, 0.37, 3.0):
                np.testing.assert_array_equal(quantize(x, s, z, mode), quantize_naive(x, s, z, mode))


def test_int8_linear_equals_the_integer_reference_bitwise():
    rng = np.random.default_rng(3)
    for activations, (dt, lo, hi) in (("asymmetric", (np.uint8, 0, 255)), ("symmetric", (np.int8, -127, 127))):
        xq = rng.integers(lo, hi + 1, (9, 300)).astype(dt)
        w = rng.integers(-127, 128, (11, 300)).astype(np.int8)
        ws, b = rng.uniform(1e-3, 1e-1, 11).astype(np.float32), rng.standard_normal(11).astype(np.float32)
        z = 17 if activations == "asymmetric" else 0
        got = linear_quantized(xq, z, w, ws, np.float32(0.05), b)
        want = int8_conv_naive(xq[:, :, None, None], z, w[:, None, None, :], ws, np.float32(0.05), b)[:, :, 0, 0]
        np.testing.assert_array_equal(got, want)


def test_tiles_over_rows_and_weights_equal_the_reference_bitwise():
    """Products large enough for several tiles of rows (CHUNK) and of weight rows (``mb < M``),
    a ragged last tile of each, through the im2col product, the 1x1 kernel (stride 1 and 2) and
    the linear path; serial and parallel entries bitwise equal."""
    rng = np.random.default_rng(7)
    K_lin, M = 3000, 50
    mb = max(K.ROWS, K.WEIGHT_TILE_BYTES // K_lin)
    assert mb < M and M % mb and 70 % K.CHUNK
    xq = rng.integers(0, 256, (70, K_lin)).astype(np.uint8)
    w = rng.integers(-127, 128, (M, K_lin)).astype(np.int8)
    ws, b = rng.uniform(1e-4, 1e-3, M).astype(np.float32), rng.standard_normal(M).astype(np.float32)
    want = int8_conv_naive(xq[:, :, None, None], 9, w[:, None, None, :], ws, np.float32(0.01), b)[:, :, 0, 0]
    np.testing.assert_array_equal(linear_quantized(xq, 9, w, ws, np.float32(0.01), b), want)
    zw, sc = (9 * w.astype(np.int32).sum(1)).astype(np.int32), (np.float32(0.01) * ws).astype(np.float32)
    outs = [np.empty((70, M), np.float32) for _ in range(2)]
    K.gemm.serial(xq, w, zw, sc, b, outs[0])
    K.gemm.parallel(xq, w, zw, sc, b, outs[1])
    np.testing.assert_array_equal(outs[0], want)
    np.testing.assert_array_equal(outs[1], want)
    x4 = rng.integers(0, 256, (3, 7, 6, 1500)).astype(np.uint8)             # NHWC, K = C = 1500
    w4 = rng.integers(-127, 128, (M, 1, 1, 1500)).astype(np.int8)
    w3 = rng.integers(-127, 128, (M, 3, 3, 400)).astype(np.int8)               # im2col: K = 3600
    x3 = np.ascontiguousarray(x4[..., :400])
    for xx, ww, stride, pad in ((x4, w4, 1, (0, 0, 0, 0)), (x4, w4, 2, (0, 0, 0, 0)), (x3, w3, 1, (1, 1, 1, 1)),
                                (x3, w3, 2, (0, 1, 2, 0))):
        args = (xx, 5, ww, ws, np.float32(0.01), b)
        kw = dict(stride=stride, padding=pad, layout="NHWC")
        np.testing.assert_array_equal(conv_quantized(*args, **kw), int8_conv_naive(*args, **kw))


@pytest.mark.parametrize("H, k, stride, dilation, pad", [
    (1, 3, 1, 1, (1, 1, 1, 1)),        # a 3x3 conv on a 1x1 input: only the centre tap reads input
    (2, 3, 2, 1, (1, 1, 1, 1)),        # 2x2 input, stride 2 (ResNet's last stage at 28x28 input)
    (1, 3, 2, 1, (2, 2, 2, 2)),        # live taps 0 and 2, not 1: the span is kept, tap 1 adds 0
    (3, 2, 1, 3, (3, 0, 0, 3)),        # dilation, lopsided padding
])
def test_taps_reading_only_padding_are_dropped_exactly(H, k, stride, dilation, pad):
    rng = np.random.default_rng(H * 100 + k)
    xq = rng.integers(0, 256, (2, H, H, 5)).astype(np.uint8)
    w = rng.integers(-127, 128, (6, k, k, 5)).astype(np.int8)
    args = (xq, 201, w, rng.uniform(1e-3, 1e-2, 6).astype(np.float32), np.float32(0.1),
            rng.standard_normal(6).astype(np.float32))
    kw = dict(stride=stride, padding=pad, dilation=dilation, layout="NHWC")
    np.testing.assert_array_equal(conv_quantized(*args, **kw), int8_conv_naive(*args, **kw))


@settings(max_examples=15)
@given(seed=st.integers(0, 2 ** 32 - 1), rows=st.integers(1, 700), k=st.integers(1, 300),
       stride=st.integers(1, 2), symmetric=st.booleans())
def test_serial_and_parallel_kernels_agree_bitwise(seed, rows, k, stride, symmetric):
    rng = np.random.default_rng(seed)
    dt, lo, hi = (np.int8, -127, 127) if symmetric else (np.uint8, 0, 255)
    A = rng.integers(lo, hi + 1, (rows, k)).astype(dt)
    W = rng.integers(-127, 128, (7, k)).astype(np.int8)
    zw = rng.integers(-10 ** 6, 10 ** 6, 7).astype(np.int32)
    sc, b = rng.random(7).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    xq = rng.integers(lo, hi + 1, (2, 6, 5, k)).astype(dt)
    Ho, Wo = (6 - 1) // stride + 1, (5 - 1) // stride + 1
    x = rng.standard_normal(rows * 3).astype(np.float32) * 50
    got = []
    for entry in ("serial", "parallel"):
        g = np.empty((rows, 7), np.float32)
        getattr(K.gemm, entry)(A, W, zw, sc, b, g)
        c = np.empty((2 * Ho * Wo, 7), np.float32)
        getattr(K.conv1x1, entry)(xq, stride, stride, Ho, Wo, W, zw, sc, b, c)
        q = np.empty(x.shape, dt)
        getattr(K.quantize, entry)(x, np.float32(0.7), np.float32(0 if symmetric else 100), np.float32(lo),
                                   np.float32(hi), q)
        got.append((g, c, q))
    for s, p in zip(*got):
        np.testing.assert_array_equal(s, p)


def test_shortcut_1x1_stride_2_and_both_layouts(real):
    _, short, x = real
    layer = _int8_conv(short, x)
    y = layer.forward(x, "NCHW")
    yh = layer.forward(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), "NHWC")
    np.testing.assert_array_equal(yh, y.transpose(0, 2, 3, 1))
    exact = short.forward(x, "NCHW")
    assert np.linalg.norm(y - exact) / np.linalg.norm(exact) < 0.02


def test_nan_and_inf_propagate_to_the_windows_that_read_them(real):
    conv3, _, x = real
    layer = _int8_conv(conv3, x)
    x = x[:3].copy()
    x[1, 0, 4, 4] = np.nan
    x[2, 5, 0, 0] = np.inf
    y = layer.forward(x, "NCHW")
    np.testing.assert_array_equal(np.isnan(y), ~np.isfinite(conv3.forward(x, "NCHW")))
    lin = Int8Linear(8, 4)
    lin.params["weight"][...] = np.arange(32).reshape(4, 8) - 16
    xl = np.ones((3, 8), np.float32)
    xl[1, 3] = np.inf
    out = lin.forward(xl, "NCHW")
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


def test_files_round_trip_and_damaged_files_raise_the_projects_errors(real, tmp_path):
    conv3, _, x = real
    layer = _int8_conv(conv3, x)
    xs = x[:, :, :8, :8]
    C, Ho, Wo = layer.out_shape(xs.shape[1:])
    fc = Int8Linear.from_linear(Linear(C * Ho * Wo, 3), np.float32(0.02), 0, "symmetric")
    fc.params["weight"][...] = np.random.default_rng(1).integers(-127, 128, fc.params["weight"].shape)
    net = Network(Sequential([("q", layer), ("r", ReLU()), ("f", Flatten()), ("fc", fc)]), xs.shape[1:])
    assert isinstance(from_config(net.body.config()).children["fc"], Int8Linear)
    path = tmp_path / "int8.h5"
    save(net, str(path))
    again = load(str(path))
    assert again.body.children["q"].params["weight"].dtype == np.int8
    assert again.body.children["fc"].activations == "symmetric"
    np.testing.assert_array_equal(again(xs), net(xs))
    with h5py.File(path, "r+") as f:
        f["params/q.input_zero_point"][0] = 300
    with pytest.raises(ShapeError, match="input_zero_point 300"):
        load(str(path))(xs)
    with h5py.File(path, "r+") as f:
        f["params/q.input_zero_point"][0] = 3
        f["params/q.input_scale"][0] = 0
    with pytest.raises(ShapeError, match="scales must be finite and positive"):
        load(str(path))(xs)
    with pytest.raises(ConfigError, match="exceed"):
        Int8Conv2d(8000, 1, 3)
    with pytest.raises(ConfigError, match="activations"):
        Int8Linear(3, 2, "unsigned")
    with pytest.raises(ConfigError, match="groups"):
        Int8Conv2d.from_conv(Conv2d(4, 4, 3, groups=2), 1.0, 0)


def test_costs_and_storage():
    layer = Int8Conv2d(16, 32, 3, padding=1)
    (r,) = [r for r in count_ops(Sequential([("q", layer)]), (16, 8, 8)).rows]
    n_out = 32 * 64
    assert r["int8_macs"] == n_out * 16 * 9 == Conv2d(16, 32, 3, padding=1).cost((16, 8, 8))["macs"]
    assert r["macs"] == 0 and r["quant_ops"] == 16 * 64
    assert r["zp_adds"] == r["dequant_mults"] == r["bias_adds"] == n_out
    assert r["storage_bytes"] == 32 * 9 * 16 + 2 * 32 * 4 + 4 + 4                  # int8 weights + scales
    sym = Int8Linear(100, 10, "symmetric").cost((100,))
    assert sym["int8_macs"] == 1000 and sym["zp_adds"] == 0 and sym["quant_ops"] == 100


def test_warmup_compiles_every_kernel():
    assert warmup()
    for k in (K.quantize, K.gemm, K.conv1x1):
        for entry in k:
            assert entry.signatures, entry
    xq = np.zeros((1, 3, 3, 2), np.uint8)
    w = np.ones((1, 1, 1, 2), np.int8)
    out = conv_quantized(xq, 0, w, np.ones(1, np.float32), 1.0, np.ones(1, np.float32), padding=(1, 1, 1, 1),
                         layout="NHWC")
    assert out.shape == (1, 5, 5, 1) and np.all(out == 1)
