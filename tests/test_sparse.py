"""Pruning and the CSR convolution: exact at no pruning, fewer MACs counted, files, refusals.

The hypothesis equivalence of ``SparseConv2d`` against the dense convolution of
the same weights (both layouts, padding, stride, dilation, densities 0-100%)
is the ``sparse_conv`` pair in tests/test_reference_pairs.py.
"""
import json
import os

import numpy as np
import pytest

import tabconv_np
from tabconv_np.conversion import convert
from tabconv_np.conversion.prune import magnitude_mask
from tabconv_np.errors import ConfigError, ShapeError
from tabconv_np.layers import Conv2d
from tabconv_np.ops import count_ops
from tabconv_np.sparse import SparseConv2d

R18 = os.path.join(os.path.dirname(__file__), os.pardir, "weights", "resnet18-paper_fashion-mnist.h5")
SWITCHES = [0, 1, 1, 1, 1, 1, 1, 1, 1, 0]


@pytest.fixture(scope="module")
def data(r18_sample):
    net, xc, xt, yt = r18_sample(50, 200)
    return net, xc, (xt, yt)


def _conv(rng, **kw):
    conv = Conv2d(6, 5, 3, **kw)
    conv.params["weight"][...] = rng.standard_normal(conv.params["weight"].shape)
    conv.params["bias"][...] = rng.standard_normal(5)
    return conv


def test_from_dense_equals_the_conv_and_serial_equals_parallel():
    from tabconv_np.kernels import sparse_kernels as k
    rng = np.random.default_rng(0)
    conv = _conv(rng, stride=2, padding=1)
    x = rng.standard_normal((3, 6, 11, 9)).astype(np.float32)
    sp = SparseConv2d.from_dense(conv)
    assert sp.nnz == conv.params["weight"].size
    np.testing.assert_allclose(sp.forward(x, "NCHW"), conv.forward(x, "NCHW"), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sp.dense(), conv.params["weight"])
    rows, _ = sp.geometry.lower(x, "NCHW")
    cols, p = np.ascontiguousarray(rows.T), sp.params
    outs = [np.empty((5, len(rows)), np.float32) for _ in range(2)]
    k.csr_cols.parallel(cols, p["data"], p["indices"], p["indptr"], p["bias"], outs[0])
    k.csr_cols.serial(cols, p["data"], p["indices"], p["indptr"], p["bias"], outs[1])
    np.testing.assert_array_equal(outs[0], outs[1])


def test_magnitude_mask_keeps_the_largest_and_the_cost_counts_nonzeros():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((8, 4, 3, 3))
    m = magnitude_mask(W, 0.75)
    assert m.sum() == int(np.ceil(0.25 * W.size))
    assert np.abs(W[m]).min() >= np.abs(W[~m]).max()
    conv = _conv(rng, padding=1)
    sp = SparseConv2d.from_dense(conv, conv.params["weight"] * magnitude_mask(conv.params["weight"], 0.5))
    c = sp.cost((6, 7, 7))
    assert sp.nnz == 135 and c["macs"] == 135 * 49 == c["index_reads"] and c["bias_adds"] == 5 * 49


def test_pruning_zero_is_the_identity_and_more_pruning_counts_fewer_macs(data, tmp_path):
    net, xc, (xt, _) = data
    same = convert(net, xc, method="prune", pruned=0, switches=SWITCHES, progress=False)
    assert np.array_equal(same.network.predict(xt).argmax(1), net.predict(xt).argmax(1))
    half = convert(net, xc, method="prune", pruned={"layer4.*": 0.9, "*": 0.5}, switches=SWITCHES, progress=False)
    macs = [count_ops(n).total["macs"] for n in (same.network, half.network)]
    assert macs[1] < 0.5 * macs[0]
    path = tmp_path / "pruned.h5"
    tabconv_np.save(half.network, path)
    x = net.normalize(xt[:4])
    np.testing.assert_array_equal(tabconv_np.load(path)(x), half.network(x))


def test_global_pruning_keeps_the_largest_weights_of_all_converted_layers(data):
    """One threshold: the kept weights are the largest of the converted layers taken together."""
    net, xc, _ = data
    res = convert(net, xc[:4], method="prune", pruned=0.8, scope="global", switches=SWITCHES, progress=False)
    sparse = {p: m for p, m in res.network.body.modules() if isinstance(m, SparseConv2d)}
    exact = dict(res.exact.body.modules())
    W = {p: exact[p].params["weight"] for p in sparse}
    total = sum(w.size for w in W.values())
    assert sum(m.nnz for m in sparse.values()) == int(np.ceil(0.2 * total))
    kept = np.concatenate([np.abs(W[p][m.dense() != 0]) for p, m in sparse.items()])
    dropped = np.concatenate([np.abs(W[p][m.dense() == 0]) for p, m in sparse.items()])
    assert kept.min() >= dropped.max()
    fractions = [m.nnz / W[p].size for p, m in sparse.items()]
    assert max(fractions) - min(fractions) > 0.05              # not the same fraction in every layer
    with pytest.raises(ConfigError, match="one pruned fraction"):
        convert(net, xc[:4], method="prune", pruned={"layer4.*": 0.9, "*": 0.5}, scope="global",
                switches=SWITCHES, progress=False)
    with pytest.raises(ConfigError, match="scope"):
        convert(net, xc[:4], method="prune", scope="network", switches=SWITCHES, progress=False)


@pytest.mark.parametrize("pruned", [1.0, -0.1, "half"])
def test_bad_fractions_are_refused_naming_the_layer(data, pruned):
    net, xc, _ = data
    with pytest.raises(ConfigError, match="pruned for"):
        convert(net, xc[:4], method="prune", pruned=pruned, switches=SWITCHES, progress=False)


def test_damaged_csr_is_refused():
    sp = SparseConv2d.from_dense(_conv(np.random.default_rng(2)))
    sp.params["indices"][0] = 10 ** 6
    with pytest.raises(ShapeError, match="indices"):
        sp.forward(np.zeros((1, 6, 5, 5), np.float32), "NCHW")
    sp = SparseConv2d.from_dense(_conv(np.random.default_rng(2)))
    sp.params["indptr"][-1] = 3
    with pytest.raises(ShapeError, match="indptr"):
        sp.forward(np.zeros((1, 6, 5, 5), np.float32), "NCHW")


def test_cli_prunes_and_ops_eval_read_the_result(tmp_path, capsys):
    from tabconv_np.cli import main
    from tabconv_np.cli.convert import METHOD_DEFAULTS
    from tabconv_np.conversion.prune import PruneSettings
    assert METHOD_DEFAULTS["prune"] == {"pruned": str(PruneSettings().pruned), "scope": PruneSettings().scope}
    out = tmp_path / "p.h5"
    assert main(["convert", R18, "-o", str(out), "--method", "prune", "--pruned", "0.7", "--scope", "global",
                 "--switches", ",".join(map(str, SWITCHES)), "--dataset", "sample", "--calib", "20", "--json"]) == 0
    capsys.readouterr()
    assert main(["ops", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["index_reads"] > 0
    assert main(["eval", str(out), "--dataset", "sample", "--limit", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.5
