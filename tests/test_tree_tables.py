"""Hash-tree (MADDNESS) tables: learning, encoding from the tensor, 8-bit lookups, layers, conversion.

The kernels' agreement with their plain references over random inputs is in
tests/test_reference_pairs.py (pairs ``tree_encode``, ``tree_lookup``, ``tree_conv``).
"""
import warnings

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tabconv_np
from tabconv_np import count_ops
from tabconv_np.blocks import Sequential
from tabconv_np.conversion import convert
from tabconv_np.errors import ConfigError, ShapeError
from tabconv_np.geometry import im2col_rows
from tabconv_np.hashtree import decode, encode, fit_trees, quantize_tables
from tabconv_np.io import load, save
from tabconv_np.kernels import tree_kernels as K
from tabconv_np.kernels import treefit_kernels as TF
from tabconv_np.layers import Conv2d, Flatten, Linear, ReLU
from tabconv_np.network import Network
from tabconv_np.ops import op_reduction
from tabconv_np.reference import fit_trees_naive, pairwise_sum, sequential_sum, tree_encode_naive
from tabconv_np.tree_tables import TreeConv2d, TreeLinear
from helpers import randomize


def _conv_and_input(seed=0, cin=3, cout=5, k=3, stride=1, padding=1, dilation=1, hw=9, n=3):
    rng = np.random.default_rng(seed)
    conv = Conv2d(cin, cout, k, stride, padding, dilation)
    conv.params["weight"][...] = rng.standard_normal(conv.params["weight"].shape) * 0.3
    conv.params["bias"][...] = rng.standard_normal(cout)
    x = rng.standard_normal((n, cin, hw, hw)).astype(np.float32)
    return conv, x


def _tree_layer(conv, x):
    rows, _ = im2col_rows(x, conv.kernel_size, conv.stride, conv.padding, conv.dilation)
    return TreeConv2d.from_conv(conv, fit_trees(rows, conv.in_channels)), rows


def test_trees_split_on_the_informative_column_and_prototypes_are_leaf_means():
    rng = np.random.default_rng(0)
    X = rng.normal(0, 0.01, (400, 6)).astype(np.float32)
    X[:200, 4] += 10                                           # two clusters along column 4
    trees = fit_trees(X, 2)
    assert trees.split_cols.shape == (2, 4) and trees.thresholds.shape == (2, 16)
    assert trees.split_cols[1, 0] == 4                          # subspace 1 = columns 3..5
    assert 0.1 < trees.thresholds[1, 0] < 9.9
    codes = encode(X, trees)
    assert codes.dtype == np.uint8 and codes.max() < 16
    for k in np.unique(codes[:, 1]):
        rows = X[codes[:, 1] == k, 3:6]
        np.testing.assert_allclose(trees.prototypes[1, k], rows.mean(0), rtol=1e-5, atol=1e-6)
    err = np.linalg.norm(decode(codes, trees) - X) / np.linalg.norm(X)
    assert err < 0.01


@given(st.integers(0, 2**16), st.sampled_from([1, 2, 3]), st.sampled_from([0, 1, 2]),
       st.sampled_from([1, 2]), st.sampled_from(["NCHW", "NHWC"]))
def test_encoding_from_the_tensor_equals_encoding_the_im2col_rows(seed, stride, padding, dilation, layout):
    conv, x = _conv_and_input(seed, stride=stride, padding=padding, dilation=dilation)
    layer, rows = _tree_layer(conv, x)
    want = tree_encode_naive(rows, layer.params["split_cols"], layer.params["thresholds"])
    xi = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(layer.encode(xi, layout), want)
    np.testing.assert_array_equal(encode(rows, layer.trees()), want)


def test_int8_lookup_equals_the_dequantised_float_tables():
    rng = np.random.default_rng(1)
    T = rng.standard_normal((7, 16, 11)).astype(np.float32) * 3
    T8, step, offset = quantize_tables(T)
    deq = T8 * step.astype(np.float64) + (T.min(axis=1)[:, None, :])
    assert np.abs(deq - T).max() <= step.max() / 2 * (1 + 1e-6)    # rounding: half a step
    layer = TreeLinear(14, 11, 7)
    layer.params["table"][...] = T8
    layer.params["step"][...] = step
    layer.params["bias"][...] = offset
    codes = rng.integers(0, 16, (20, 7)).astype(np.uint8)
    want = deq[np.arange(7)[None, :], codes].sum(1)                # sum of dequantised entries
    got = layer.lookup(codes)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_accumulation_bound_at_the_extremes():
    """All-255 tables over 1000 codebooks: 255000 per output, exactly (uint16 blocks of 257)."""
    C, M = 1000, 33
    T8 = np.full((C, 16, M), 255, np.uint8)
    codes = np.random.default_rng(0).integers(0, 16, (5, C)).astype(np.uint8)
    out = np.empty((5, M), np.float32)
    for fn in (K.lookup.serial, K.lookup.parallel):
        fn(codes, T8, np.ones(M, np.float32), np.zeros(M, np.float32), out)
        assert np.all(out == 255 * C)
    assert K.ACC_BLOCK * 255 <= np.iinfo(np.uint16).max


def test_serial_and_parallel_kernels_agree_bitwise():
    conv, x = _conv_and_input(3, cin=6, cout=40, hw=15, n=4)
    layer, rows = _tree_layer(conv, x)
    p = layer.params
    args, _ = layer.encoder_args(x, "NCHW")
    outs, codes = [], []
    for look, enc in ((K.lookup.serial, K.encode_padded.serial), (K.lookup.parallel, K.encode_padded.parallel)):
        c = np.empty((4 * 225, 6), np.uint8)
        enc(*args, c)
        y = np.empty((4 * 225, 40), np.float32)
        look(c, p["table"], p["step"], p["bias"], y)
        outs.append(y)
        codes.append(c)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(codes[0], codes[1])


def test_nan_and_inf_propagate_and_are_never_encoded():
    conv, x = _conv_and_input(4)
    layer, _ = _tree_layer(conv, x)
    x = x.copy()
    x[1, 0, 4, 4] = np.nan
    x[2, 2, 0, 0] = np.inf
    y = layer.forward(x, "NCHW")
    ref = conv.forward(x, "NCHW")
    np.testing.assert_array_equal(np.isnan(y), ~np.isfinite(ref))   # exactly the windows that see them
    assert np.isfinite(y[0]).all()
    with pytest.raises(ShapeError, match="NaN or Inf"):
        layer.encode(x)
    lin = TreeLinear.from_linear(_linear(), fit_trees(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32), 2))
    xl = np.ones((3, 8), np.float32)
    xl[1, 3] = np.nan
    out = lin.forward(xl, "NCHW")
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


def _linear():
    lin = Linear(8, 4)
    lin.params["weight"][...] = np.random.default_rng(5).standard_normal((4, 8))
    return lin


def test_damaged_files_raise_the_projects_errors(tmp_path):
    conv, x = _conv_and_input(5)
    layer, _ = _tree_layer(conv, x)
    net = Network(Sequential([("t", layer), ("r", ReLU()), ("f", Flatten()), ("fc", Linear(5 * 81, 2))]),
                  (3, 9, 9))
    path = tmp_path / "tree.h5"
    save(net, str(path))
    again = load(str(path))
    np.testing.assert_array_equal(again(x), net(x))                 # files round-trip
    with h5py.File(path, "r+") as f:
        f["params/t.split_cols"][0, 0] = 10_000
    bad = load(str(path))
    with pytest.raises(ShapeError, match="split_cols must be in"):
        bad(x)
    with pytest.raises(ShapeError, match="codes must be in"):
        TreeLinear(8, 4, 2).lookup(np.full((1, 2), 16))
    with pytest.raises(ConfigError):
        TreeConv2d(2, 3, 3, n_codebooks=19)


def test_costs_and_storage():
    layer = TreeConv2d(16, 32, 3, padding=1)
    (r,) = [r for r in count_ops(Sequential([("t", layer)]), (16, 8, 8)).rows]
    rows, C, M = 64, 16, 32
    assert r["encode_cmps"] == rows * C * 4 and r["encode_macs"] == 0 and r["macs"] == 0
    assert r["lookups"] == rows * M * C and r["lookup_adds"] == rows * M * (C - 1)
    assert r["dequant_mults"] == rows * M and r["offline"] == {"macs": C * 16 * 9 * M}
    assert r["storage_bytes"] == C * 16 * M + C * 16 * 4 + C * 4 * 4 + 2 * M * 4
    assert r["storage_bytes"] < 16 * 32 * 9 * 4                         # below the float32 weights


@pytest.fixture(scope="module")
def lenet_pair():
    net = randomize(tabconv_np.build("lenet", 1, 10), seed=2)
    imgs = np.random.default_rng(0).integers(0, 256, (40, 1, 28, 28)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = convert(net, imgs, method="maddness", progress=False)
        b = convert(net, imgs, method="maddness", progress=False)
    return net, imgs, a, b


def test_maddness_conversion_is_deterministic_and_counted(lenet_pair):
    net, imgs, a, b = lenet_pair
    np.testing.assert_array_equal(a.network.predict(imgs), b.network.predict(imgs))
    mods = dict(a.network.body.modules())
    assert isinstance(mods["conv1"], TreeConv2d) and mods["conv1"].n_codebooks == 1     # one channel, 5x5
    assert isinstance(mods["fc2"], TreeLinear) and mods["fc2"].n_codebooks == 30       # 120 inputs / 4
    red = op_reduction(a.network, a.exact)
    assert red["full"]["reduction"] > 0.5
    # 16 one-byte entries per codebook and output: below the float32 weights when a codebook
    # covers more than 4 inputs (the 5x5 conv), about equal at 4 (the linear layers)
    rows = {r["name"]: r for r in count_ops(a.network).rows}
    exact_rows = {r["name"]: r for r in count_ops(a.exact).rows}
    assert rows["conv1"]["storage_bytes"] < exact_rows["conv1"]["storage_bytes"] / 2
    assert a.network.meta["maddness"]["refine"] == "exact"


def test_maddness_refinement_reduces_the_error(lenet_pair):
    net, imgs, a, _ = lenet_pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = convert(net, imgs, method="maddness", refine=None, progress=False)
    ref = a.exact.predict(imgs)
    err = lambda r: np.linalg.norm(r.network.predict(imgs) - ref)   # noqa: E731
    assert err(a) < err(plain)


def test_the_reference_sums_in_numpys_order():
    """``fit_trees_naive`` spells out its summation orders; they are those of NumPy's
    ``A.sum(-1)`` (pairwise) and ``A.sum(0)`` (row after row, two or more columns), so the
    trees equal those of the plain NumPy formulation bit for bit."""
    rng = np.random.default_rng(0)
    for n in range(1, 300):
        A = rng.standard_normal((4, n)) * np.exp(3 * rng.standard_normal((4, n)))
        assert np.array_equal(pairwise_sum(A), A.sum(-1)), n
        B = np.ascontiguousarray(A.T)
        if B.shape[1] >= 2:
            assert np.array_equal(sequential_sum(B), B.sum(0)), n
    assert np.signbit(sequential_sum(np.full((3, 2), -0.0))).sum() == 0    # from +0.0


def _bits(a):
    return a.view(np.uint32) if a.dtype == np.float32 else a


def _assert_same_trees(got, want):
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(_bits(g), _bits(w))


def test_fit_trees_equals_the_reference_on_activation_like_rows():
    """ReLU-like rows (many exact zeros, -0.0 among them), thousands of rows, 3x3 windows."""
    rng = np.random.default_rng(7)
    X = np.maximum(rng.standard_normal((3000, 45)) + rng.standard_normal(45), 0).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = -0.0
    for C, cand in ((5, 4), (3, 2), (45, 4)):
        t = fit_trees(X, C, cand)
        _assert_same_trees((t.split_cols, t.thresholds, t.prototypes), fit_trees_naive(X, C, cand))


def test_tree_learning_serial_and_parallel_agree_bitwise():
    rng = np.random.default_rng(3)
    X = np.round(rng.standard_normal((700, 50)), 2).astype(np.float32)
    C, Ds = 6, 9                                               # the last subspace has 5 columns
    outs = []
    for fn, tasks in ((TF.fit.serial, 1), (TF.fit.parallel, 1), (TF.fit.parallel, 4),
                      (TF.fit.serial, 6)):
        o = (np.full((C, 4), -1, np.int32), np.full((C, 16), np.nan, np.float32),
             np.full((C, 16, Ds), np.nan, np.float32))
        fn(X, Ds, 4, tasks, *o)
        outs.append(o)
    for o in outs[1:]:
        _assert_same_trees(o, outs[0])
    t = fit_trees(X, C)
    _assert_same_trees((t.split_cols, t.thresholds, t.prototypes), outs[0])
    assert np.all(outs[0][2][5, :, 5:] == 0)                   # padding columns: zeros


def test_tree_learning_kernel_helpers_match_their_definitions():
    """The pairwise column sum (also above 128 terms) and the stable radix argsort."""
    rng = np.random.default_rng(0)
    for n in list(range(1, 140)) + [255, 256, 257, 600, 1031]:
        a = rng.standard_normal(n) * np.exp(3 * rng.standard_normal(n))
        assert TF._colsum(a, n) == pairwise_sum(a), n
    v = rng.standard_normal(5000).astype(np.float32)
    v[::19] = np.round(v[::19], 1)                              # ties
    v[::7] = 0.0
    v[::11] = -0.0
    v[::13] = np.float32(1e-42)                                 # subnormals
    v[::17] = -np.float32(3e38)
    out = np.empty(len(v), np.int32)
    args = (np.empty(len(v), np.uint32), np.empty(len(v), np.uint32), np.empty(len(v), np.int32),
            np.empty(1 << TF.RADIX_BITS, np.int64))
    TF._argsort_column(v, out, *args)
    np.testing.assert_array_equal(out, np.argsort(v, kind="stable"))
    c = np.full(10, 2.5, np.float32)                            # one digit everywhere: passes skipped
    out = np.empty(10, np.int32)
    TF._argsort_column(c, out, *(a[:10] for a in args[:3]), args[3])
    np.testing.assert_array_equal(out, np.arange(10))


def test_fit_trees_refuses_empty_subspaces():
    X = np.random.default_rng(0).standard_normal((20, 9)).astype(np.float32)
    with pytest.raises(ConfigError, match="empty; use n_codebooks = 3"):
        fit_trees(X, 4)                                        # ceil(9/4) = 3: 3 subspaces fill D
    assert fit_trees(X, 3).C == 3


def test_tree_learning_warmup_compiles_both_entries():
    from tabconv_np.hashtree import warmup
    assert warmup()
    assert all(fn.signatures for fn in TF.fit)


def test_fused_encode_lookup_equals_the_three_passes_serial_and_parallel():
    """kernels.tree_kernels.encode_lookup (the prepared plans' one region per layer) against
    encode_padded + lookup + the epilogue clamp(y + res), bitwise, every block size."""
    conv, x = _conv_and_input(3, cin=6, cout=40, hw=15, n=4)
    layer, _ = _tree_layer(conv, x)
    p = layer.params
    args, _ = layer.encoder_args(x, "NCHW")
    R = 4 * 225
    codes = np.empty((R, 6), np.uint8)
    K.encode_padded.serial(*args, codes)
    y = np.empty((R, 40), np.float32)
    K.lookup.serial(codes, p["table"], p["step"], p["bias"], y)
    res = np.random.default_rng(1).standard_normal((R, 40)).astype(np.float32)
    want = np.clip(y + res, np.float32(0), np.float32(6))
    for fn in (K.encode_lookup.serial, K.encode_lookup.parallel):
        for blk in (1, 7, 32):
            got = np.empty((R, 40), np.float32)
            fn(*args, p["table"], p["step"], p["bias"], res, True,
               np.float32(0), np.float32(6), blk, got)
            np.testing.assert_array_equal(got, want)
