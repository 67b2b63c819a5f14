"""Table layers: exactness with complete prototypes, BN folding, op counts, configs, HDF5."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tabconv_np import count_ops
from tabconv_np.errors import ConfigError, ShapeError
from tabconv_np.fold import fuse_conv_bn
from tabconv_np.functional import im2col_rows
from tabconv_np.io import load, save
from tabconv_np.blocks import Sequential
from tabconv_np.layers import BatchNorm2d, Conv2d, Flatten, Linear, ReLU
from tabconv_np.ops import rows as op_rows
from tabconv_np.registry import from_config
from tabconv_np.network import Network
from tabconv_np.pq import subspace_length
from tabconv_np.tables import TableConv2d, TableLinear, table_from_weights, warmup


@pytest.fixture(scope="module", autouse=True)
def warm():
    warmup()


def _conv(rng, cin, cout, k, stride=1, padding=0, dilation=1, bias=True):
    conv = Conv2d(cin, cout, k, stride, padding, dilation, bias=bias)
    conv.params["weight"][...] = rng.standard_normal(conv.params["weight"].shape)
    if bias:
        conv.params["bias"][...] = rng.standard_normal(cout)
    return conv


def _complete_prototypes(rows, C):
    """Prototypes holding every distinct sub-row of ``rows`` in every subspace (padded, repeated)."""
    N, D = rows.shape
    Ds = subspace_length(D, C)
    Xp = np.zeros((N, C * Ds), np.float32)
    Xp[:, :D] = rows
    subs = [np.unique(Xp[:, c * Ds:(c + 1) * Ds], axis=0) for c in range(C)]
    K = max(len(s) for s in subs)
    P = np.zeros((C, K, Ds), np.float32)
    for c, s in enumerate(subs):
        P[c, :len(s)] = s
        P[c, len(s):] = s[0]
    return P


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.sampled_from([1, 2, 3]),
       st.sampled_from([1, 2]), st.integers(0, 1), st.integers(1, 6), st.booleans(),
       st.sampled_from(["NCHW", "NHWC"]), st.integers(0, 2**31 - 1))
@settings(max_examples=30)
def test_complete_prototypes_reproduce_the_conv(n, cin, cout, k, stride, pad, C, bias, layout, seed):
    rng = np.random.default_rng(seed)
    conv = _conv(rng, cin, cout, k, stride, pad, bias=bias)
    x = rng.integers(0, 3, (n, cin, 5, 6)).astype(np.float32)       # few distinct values
    C = min(C, cin * k * k)
    rows, _ = im2col_rows(x, k, stride, pad)
    table = TableConv2d.from_conv(conv, _complete_prototypes(rows, C))
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    got, ref = table(x, layout), conv(x, layout)
    assert got.shape == ref.shape and got.dtype == np.float32
    w = conv.params["weight"]
    scale = im2col_rows(np.abs(x), k, stride, pad, layout=layout)[0] @ np.abs(w.reshape(cout, -1)).T
    bound = 8 * (cin * k * k + 1) * 2.0**-24 * (scale.max() + 1) + 1e-6
    assert np.max(np.abs(got - ref)) <= bound


def test_complete_prototypes_reproduce_the_linear():
    rng = np.random.default_rng(0)
    lin = Linear(12, 5)
    lin.params["weight"][...] = rng.standard_normal((5, 12))
    lin.params["bias"][...] = rng.standard_normal(5)
    x = rng.integers(0, 2, (40, 12)).astype(np.float32)
    table = TableLinear.from_linear(lin, _complete_prototypes(x, 4))
    np.testing.assert_allclose(table(x, "NCHW"), lin(x, "NCHW"), rtol=1e-5, atol=1e-5)


def test_bn_folded_table_equals_table_then_bn():
    rng = np.random.default_rng(1)
    conv = _conv(rng, 3, 6, 3, padding=1, bias=False)
    bn = BatchNorm2d(6)
    for k, lo, hi in (("weight", 0.5, 2), ("bias", -1, 1), ("running_mean", -1, 1), ("running_var", 0.5, 2)):
        bn.params[k][...] = rng.uniform(lo, hi, 6)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    rows, _ = im2col_rows(x, 3, 1, 1)
    P = rng.standard_normal((3, 16, 9)).astype(np.float32)          # any prototypes
    unfolded = TableConv2d.from_conv(conv, P)                          # no bias
    folded = TableConv2d.from_conv(fuse_conv_bn(conv, bn), P)
    np.testing.assert_allclose(folded(x, "NCHW"), bn(unfolded(x, "NCHW"), "NCHW"), rtol=1e-4, atol=1e-4)


def test_op_counts_by_hand():
    # 4x6x6 input, 8 filters 3x3 stride 2 pad 1 -> 8x3x3 output: 9 rows of D = 36
    t = TableConv2d(4, 8, 3, stride=2, padding=1, n_codebooks=4, n_prototypes=16, bias=True)
    (r,), _ = op_rows(t, (4, 6, 6), "t")
    assert r["out_shape"] == [8, 3, 3]
    assert r["encode_macs"] == 9 * 16 * 36          # rows * K * D (Ds = 9, C = 4)
    assert r["encode_cmps"] == 9 * 4 * 15           # rows * C * (K - 1)
    assert r["lookups"] == 9 * 8 * 4                # rows * M * C
    assert r["lookup_adds"] == 9 * 8 * 3            # rows * M * (C - 1)
    assert r["bias_adds"] == 9 * 8
    assert r["macs"] == 0
    assert r["storage_bytes"] == 4 * (4 * 16 * 9 + 4 * 16 * 8 + 8)
    assert r["params"] == 4 * 16 * 9 + 4 * 16 * 8 + 8
    # D = 10 in C = 4 subspaces: Ds = 3, the padded columns are counted (12 per prototype)
    lt = TableLinear(10, 3, n_codebooks=4, n_prototypes=5, bias=False)
    (r,), _ = op_rows(lt, (10,), "l")
    assert (r["encode_macs"], r["encode_cmps"], r["lookups"], r["lookup_adds"], r["bias_adds"]) == \
        (5 * 12, 4 * 4, 3 * 4, 3 * 3, 0)
    # count_ops scales by the batch and sums into "ops"
    total = count_ops(Sequential([("t", t)]), (5, 4, 6, 6)).total
    assert total["encode_macs"] == 5 * 9 * 16 * 36 and total["lookups"] == 5 * 9 * 8 * 4
    assert total["ops"] == 5 * (9 * 16 * 36 + 9 * 4 * 15 + 9 * 8 * 3 + 9 * 8)


def test_out_of_range_codes_raise_before_lookup():
    t = TableLinear(6, 2, n_codebooks=2, n_prototypes=4)
    assert t.lookup(np.array([[0, 3]], np.uint8)).shape == (1, 2)
    with pytest.raises(ShapeError, match=r"\[0, 4\)"):
        t.lookup(np.array([[0, 4]], np.uint8))
    with pytest.raises(ShapeError):
        t.lookup(np.array([[0, 1, 2]]))
    with pytest.raises(ShapeError):
        t.lookup(np.array([[-1, 0]]))
    with pytest.raises(ShapeError):
        t.encode(np.zeros((2, 5), np.float32))


def test_bad_configs_and_inputs():
    with pytest.raises(ConfigError):
        TableConv2d(2, 3, 3, n_codebooks=19)           # C > D = 18
    with pytest.raises(ConfigError):
        TableLinear(4, 2, n_codebooks=2, n_prototypes=0)
    t = TableConv2d(2, 3, 3, n_codebooks=2, n_prototypes=4)
    with pytest.raises(ShapeError, match="2 channels"):
        t(np.zeros((1, 3, 5, 5), np.float32), "NCHW")
    with pytest.raises(ShapeError):
        TableLinear(4, 2, 2, 4)(np.zeros((2, 5), np.float32), "NCHW")
    with pytest.raises(ShapeError):
        table_from_weights(np.zeros((2, 4, 3), np.float32), np.zeros((9, 2), np.float32))


def _table_net(rng):
    conv = _conv(rng, 1, 4, 3, 1, 1)
    x = rng.standard_normal((20, 1, 6, 6)).astype(np.float32)
    rows, _ = im2col_rows(x, 3, 1, 1)
    P = rows[rng.choice(len(rows), 8, replace=False)].reshape(8, 3, 3).transpose(1, 0, 2).copy()
    lin = Linear(4 * 36, 3)
    lin.params["weight"][...] = rng.standard_normal((3, 144))
    lin.params["bias"][...] = rng.standard_normal(3)
    body = Sequential([("conv", TableConv2d.from_conv(conv, P)), ("relu", ReLU()), ("flat", Flatten()),
                       ("fc", TableLinear.from_linear(lin, rng.standard_normal((6, 300, 24))))])
    return Network(body, (1, 6, 6), meta={"arch": "custom"}), x


def test_config_round_trip_and_save_load(tmp_path):
    rng = np.random.default_rng(2)
    net, x = _table_net(rng)
    for _, m in net.body.modules():
        if isinstance(m, (TableConv2d, TableLinear)):
            again = from_config(m.config())
            assert type(again) is type(m) and again.config() == m.config()
    assert net.body.children["fc"].encode(np.zeros((1, 144), np.float32)).dtype == np.uint16
    path = tmp_path / "tables.h5"
    save(net, path)
    back = load(path)
    assert back.config() == net.config()
    for k, v in net.state_dict().items():
        assert np.array_equal(back.state_dict()[k], v), k
    assert np.array_equal(back(x), net(x))
    for layout in ("NHWC",):
        net.layout = back.layout = layout
        assert np.array_equal(back(x), net(x))


def test_interchangeable_in_a_network_and_counted():
    rng = np.random.default_rng(3)
    net, x = _table_net(rng)
    counts = count_ops(net)
    types = [r["type"] for r in counts.rows]
    assert "TableConv2d" in types and "TableLinear" in types
    assert counts.total["macs"] == 0 and counts.total["lookups"] == 36 * 4 * 3 + 3 * 6
    assert "lookups" in counts.table()
    assert net.predict(rng.integers(0, 255, (3, 1, 6, 6)).astype(np.uint8)).shape == (3, 3)


def test_fit_tables_least_squares():
    from tabconv_np.tables import fit_tables
    rng = np.random.default_rng(4)
    N, C, K, M = 400, 3, 5, 4
    codes = rng.integers(0, K, (N, C))
    truth = rng.standard_normal((C, K, M)).astype(np.float32)
    Y = truth[np.arange(C)[None], codes].sum(1)               # exactly additive targets
    T0 = np.zeros_like(truth)
    T = fit_tables(codes, Y, T0, ridge=1e-6, sweeps=30)
    pred = T[np.arange(C)[None], codes].sum(1)
    assert np.abs(pred - Y).max() < 1e-3                       # an additive target is fitted
    # the ridge pulls toward the starting tables; sweeps=0 returns them
    assert np.array_equal(fit_tables(codes, Y, truth, 1.0, 0), truth)
    far = fit_tables(codes, Y, T0, ridge=1e6, sweeps=3)
    assert np.abs(far).max() < 1e-2
    # ReLU-aware: rows whose target and prediction are both clipped cost nothing
    Yneg = -np.abs(Y) - 1
    Tr = fit_tables(codes, Yneg, np.full_like(T0, -1.0), ridge=1e-6, sweeps=3, relu=True)
    assert np.array_equal(Tr, np.full_like(T0, -1.0))         # already all clipped: unchanged
