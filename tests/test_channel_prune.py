"""Channel pruning (method ``channels``): identity at keep=1, the least-squares rebuild against
dropping channels, a network that really shrinks, files, the CLI, refusals."""
import itertools
import json
import os

import numpy as np
import pytest

import tabconv_np
from tabconv_np.conversion import convert, op_reduction, skeleton
from tabconv_np.conversion.channels import (ChannelSettings, channel_pairs, select_greedy, select_lasso,
                                            shrink)
from tabconv_np.errors import ConfigError
from tabconv_np.models import build, randomize

R18 = os.path.join(os.path.dirname(__file__), os.pardir, "weights", "resnet18-paper_fashion-mnist.h5")
#: layer1 and layer2 converted: enough calibration rows per weight at 120 images, and quick
SWITCHES = [0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
#: calibration and test images of the shipped sample (``r18_sample``)
SAMPLE = (120, 150)


@pytest.fixture(scope="module")
def halved(r18_sample):
    """keep 0.5 with the least-squares rebuild and with channels only dropped (same selection rule)."""
    net, xc, _, _ = r18_sample(*SAMPLE)
    kw = dict(method="channels", keep=0.5, switches=SWITCHES, refit_classifier=False, progress=False)
    return convert(net, xc, **kw), convert(net, xc, refine=None, **kw)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_keep_one_is_the_identity(r18_sample):
    net, xc, xt, _ = r18_sample(*SAMPLE)
    res = convert(net, xc[:20], method="channels", keep=1.0, refit_classifier=False, progress=False)
    x = net.normalize(xt[:50])
    np.testing.assert_array_equal(res.network(x), res.exact(x))
    assert tabconv_np.count_ops(res.network).total == tabconv_np.count_ops(res.exact).total
    assert all("kept" in r for r in res.layers)


def test_least_squares_rebuild_beats_dropping_channels(r18_sample, halved):
    net, _, xt, yt = r18_sample(*SAMPLE)
    ls, drop = halved
    x = net.normalize(xt)
    ref = ls.exact(x)
    err_ls, err_drop = _rel(ls.network(x), ref), _rel(drop.network(x), ref)
    assert err_ls < 0.7 * err_drop, (err_ls, err_drop)
    assert np.mean(ls.network(x).argmax(1) == yt) >= np.mean(ref.argmax(1) == yt) - 0.03
    # the first pruned layer saw the same input in both: the same channels, only the rebuild differs
    first = [[r["kept_channels"] for r in res.layers if "kept_channels" in r][0] for res in (ls, drop)]
    assert first[0] == first[1]


def test_the_network_shrinks_and_round_trips(r18_sample, halved, tmp_path):
    net, _, xt, _ = r18_sample(*SAMPLE)
    res = halved[0]
    mods = dict(res.network.body.modules())
    assert mods["layer1.0.conv1"].params["weight"].shape == (32, 64, 3, 3)
    assert mods["layer1.0.conv2"].params["weight"].shape == (64, 32, 3, 3)
    assert mods["layer2.1.conv2"].params["weight"].shape == (128, 64, 3, 3)
    assert mods["layer3.0.conv2"].params["weight"].shape == (256, 256, 3, 3)      # switch off
    assert type(mods["layer1.0.conv2"]).__name__ == "Conv2d"
    ops, exact = tabconv_np.count_ops(res.network).total, tabconv_np.count_ops(res.exact).total
    assert ops["params"] < exact["params"] and ops["macs"] < exact["macs"]
    assert tabconv_np.count_ops(skeleton(net, "channels", keep=0.5, switches=SWITCHES)).total["macs"] == ops["macs"]
    red = op_reduction(res.network, res.exact)
    assert red["paper"]["cost"] == ops["macs"] < red["paper"]["exact"]
    st = red["storage"]
    assert st["network_bytes"] < st["exact_network_bytes"] and 0 < st["table_bytes"] < st["replaced_weight_bytes"]
    layer1 = [r for r in res.layers if r["name"] == "layer1.0.conv1"][0]
    assert layer1["filters"] == [32, 64] and "32/64 out" in res.summary()
    x = net.normalize(xt[:20])
    y = res.network(x)
    path = tmp_path / "channels.h5"
    tabconv_np.save(res.network, path)
    back = tabconv_np.load(path)
    np.testing.assert_array_equal(back(x), y)
    np.testing.assert_allclose(tabconv_np.prepare(back)(x), y, rtol=1e-4, atol=1e-4)
    assert back.meta["channels"]["layers"]["layer1.0.conv2"] == {"in": [32, 64]}


def test_pairs_are_the_safe_ones_and_shrinking_unused_channels_changes_nothing():
    nin = build("nin", 1, 10)
    assert channel_pairs(nin.body) == {f"conv{i}": (f"conv{i - 1}", []) for i in range(2, 10)}
    r18 = build("resnet18-paper", 1, 10)
    pairs = channel_pairs(r18.body)
    assert set(pairs) == {f"layer{s}.{b}.conv2" for s in range(1, 5) for b in (0, 1)}
    assert pairs["layer2.1.conv2"] == ("layer2.1.conv1", ["layer2.1.bn1"])
    # a block with BN, and a chain with max pooling between: B's weights on the dropped channels
    # are zero, so removing them (from A, the BN and B) keeps every output
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    for net, b in ((r18, "layer2.1.conv2"), (randomize(build("lenet", 1, 10), seed=1), "conv2")):
        net = randomize(net, seed=2) if net is r18 else net
        pairs = channel_pairs(net.body)
        layer = dict(net.body.modules())[b]
        keep = np.arange(0, layer.in_channels, 3)
        layer.params["weight"][:, np.setdiff1d(np.arange(layer.in_channels), keep)] = 0
        small = tabconv_np.Network(shrink(net.body, pairs, {b: keep}), net.input_shape)
        assert dict(small.body.modules())[b].in_channels == len(keep)
        np.testing.assert_allclose(small(x), net(x), rtol=1e-4, atol=1e-4)
        assert tabconv_np.count_ops(small).total["params"] < tabconv_np.count_ops(net).total["params"]


def test_selections_on_small_problems():
    rng = np.random.default_rng(3)
    # G = I: beta_c = soft(b_c, lam), so the LASSO keeps the k largest |b_c|
    b = rng.standard_normal(12)
    assert list(select_lasso(np.eye(12), b, 4)) == sorted(np.argsort(-np.abs(b))[:4])
    # greedy dropping one channel drops the one whose loss raises the least-squares error least
    A = rng.standard_normal((40, 6))
    G, b = A.T @ A, A.T @ rng.standard_normal(40)

    def err(S):
        S = list(S)
        beta = np.linalg.solve(G[np.ix_(S, S)], b[S])
        return -b[S] @ beta
    best = min(itertools.combinations(range(6), 5), key=err)
    assert list(select_greedy(G, b, 5)) == list(best)


@pytest.mark.parametrize("keep", [0, -0.5, 1.5, "half", {"layer1.0.conv2": 0.0, "*": 0.5}])
def test_bad_keep_values_are_refused_naming_the_layer(r18_sample, keep):
    net, xc, _, _ = r18_sample(*SAMPLE)
    with pytest.raises(ConfigError, match=r"keep for layer1\.0\.conv\d must be a fraction"):
        convert(net, xc[:4], method="channels", keep=keep, switches=SWITCHES, progress=False)
    with pytest.raises(ConfigError, match="select"):
        ChannelSettings(select="random")


def test_cli_convert_ops_eval(tmp_path, capsys):
    from tabconv_np.cli import main
    from tabconv_np.cli.convert import METHOD_DEFAULTS
    d = ChannelSettings()
    assert METHOD_DEFAULTS["channels"] == {"keep": str(d.keep), "select": d.select, "refine": d.refine}
    out = tmp_path / "c.h5"
    assert main(["convert", R18, "-o", str(out), "--method", "channels", "--keep", "layer1.*=0.5,*=1",
                 "--select", "lasso", "--dataset", "sample", "--calib", "40", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["op_reduction"]["paper"]["cost"] < res["op_reduction"]["paper"]["exact"]
    assert main(["ops", str(out), "--json"]) == 0
    macs = json.loads(capsys.readouterr().out)["total"]["macs"]
    assert macs == res["op_reduction"]["paper"]["cost"]
    assert main(["eval", str(out), "--dataset", "sample", "--limit", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.8
    assert main(["convert", R18, "-o", str(tmp_path / "d.h5"), "--method", "channels", "--refine", "local",
                 "--dataset", "sample", "--calib", "4"]) == 2
    assert "refine" in capsys.readouterr().err
