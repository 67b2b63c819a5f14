"""The low-rank conversion method: exact at full rank, smaller below it, refit to the outputs."""
import os

import numpy as np
import pytest

import tabconv_np
from tabconv_np.blocks import Sequential
from tabconv_np.conversion import convert
from tabconv_np.conversion.lowrank import factor_layer
from tabconv_np.errors import ConfigError
from tabconv_np.layers import Conv2d, Linear
from tabconv_np.ops import count_ops

WEIGHTS = os.path.join(os.path.dirname(__file__), os.pardir, "weights")
SWITCHES = [0, 1, 1, 1, 1, 1, 1, 1, 1, 0]


@pytest.fixture(scope="module")
def data(r18_sample):
    return r18_sample(200, 200)


def test_full_rank_factorisation_equals_the_layer():
    rng = np.random.default_rng(0)
    conv = Conv2d(5, 7, 3, stride=2, padding=1)
    conv.params["weight"][...] = rng.standard_normal(conv.params["weight"].shape)
    conv.params["bias"][...] = rng.standard_normal(7)
    lin = Linear(6, 4)
    lin.params["weight"][...] = rng.standard_normal((4, 6))
    for layer, x in ((conv, rng.standard_normal((2, 5, 9, 9))), (lin, rng.standard_normal((3, 6)))):
        x = x.astype(np.float32)
        W = layer.params["weight"]
        pair = factor_layer(layer, min(W.shape[0], W.size // W.shape[0]))
        assert isinstance(pair, Sequential)
        np.testing.assert_allclose(pair.forward(x, "NCHW"), layer.forward(x, "NCHW"), rtol=1e-4, atol=1e-4)


def test_lowrank_conversion_counts_fewer_macs_and_keeps_accuracy(data, tmp_path):
    net, xc, xt, yt = data
    exact = np.mean(net.predict(xt).argmax(1) == yt)
    plain = convert(net, xc, method="lowrank", rank="auto", energy=0.9, refine=None, switches=SWITCHES,
                    progress=False)
    refit = convert(net, xc, method="lowrank", rank="auto", energy=0.9, switches=SWITCHES, progress=False)
    macs = count_ops(refit.exact).total["macs"]
    assert count_ops(refit.network).total["macs"] < 0.85 * macs
    acc = {k: np.mean(r.network.predict(xt).argmax(1) == yt) for k, r in (("plain", plain), ("refit", refit))}
    assert acc["refit"] >= exact - 0.02 and acc["plain"] >= exact - 0.03
    path = tmp_path / "lowrank.h5"
    tabconv_np.save(refit.network, path)
    x = refit.network.normalize(xt[:4])
    np.testing.assert_array_equal(tabconv_np.load(path)(x), refit.network(x))


def test_full_rank_conversion_keeps_every_prediction(data):
    net, xc, xt, _ = data
    res = convert(net, xc, method="lowrank", rank=10 ** 6, refine=None, switches=SWITCHES, progress=False)
    assert np.array_equal(res.network.predict(xt).argmax(1), net.predict(xt).argmax(1))


def test_mac_budget_chooses_ranks_within_it(data):
    """The converted layers' factors cost at most the budget's share of their exact MACs; a
    larger budget keeps more and fits the exact outputs better."""
    net, xc, xt, yt = data
    res = {f: convert(net, xc, method="lowrank", macs=f, switches=SWITCHES, progress=False) for f in (0.2, 0.5)}
    exact = count_ops(res[0.2].exact)
    conv = {r["name"]: r["macs"] for r in exact.rows if r["name"] in {rec["name"] for rec in res[0.2].layers}}
    fixed = exact.total["macs"] - sum(conv.values())
    for f, r in res.items():
        assert count_ops(r.network).total["macs"] - fixed <= f * sum(conv.values())
    ranks = {f: [rec["r"] for rec in r.layers if "r" in rec] for f, r in res.items()}
    assert all(a <= b for a, b in zip(ranks[0.2], ranks[0.5])) and ranks[0.2] != ranks[0.5]
    err = {f: np.mean([rec["rel_error"] for rec in r.layers if "r" in rec]) for f, r in res.items()}
    assert err[0.5] < err[0.2]
    assert np.mean(res[0.5].network.predict(xt).argmax(1) == yt) > 0.85


@pytest.mark.parametrize("kw", [dict(rank=0), dict(rank=1.5), dict(energy=0), dict(energy=1.5), dict(macs=1.5),
                                dict(macs=0.5, form="tucker2")])
def test_bad_settings_are_refused(data, kw):
    net, xc, _, _ = data
    with pytest.raises(ConfigError):
        convert(net, xc[:8], method="lowrank", switches=SWITCHES, progress=False, **kw)


def test_plan_fuses_the_epilogue_of_factored_layers(data):
    from tabconv_np.plan import prepare
    net, xc, xt, _ = data
    res = convert(net, xc[:50], method="lowrank", rank=16, refine=None, switches=SWITCHES, progress=False)
    plan = prepare(res.network)
    x = res.network.normalize(xt[:8])
    np.testing.assert_allclose(plan(x), res.network(x), rtol=1e-4, atol=1e-4)
    # the second factor of each block's last conv takes the residual sum and the ReLU
    assert sum(p.act[0] == 0 for p in plan.prepared) == 17


@pytest.mark.parametrize("form", ["svd", "spatial", "tucker2"])
def test_every_form_is_exact_at_full_rank(form):
    from tabconv_np.conversion.lowrank import unfoldings
    rng = np.random.default_rng(1)
    for kw in (dict(stride=2, padding=1), dict(stride=(1, 2), padding=(0, 2, 1, 0), dilation=2)):
        conv = Conv2d(5, 7, (3, 2), bias=True, **kw)
        conv.params["weight"][...] = rng.standard_normal(conv.params["weight"].shape)
        conv.params["bias"][...] = rng.standard_normal(7)
        full = [min(M.shape) for M in unfoldings(conv, form)]
        parts = factor_layer(conv, tuple(full) if form == "tucker2" else full[0], form)
        assert len(parts.children) == (3 if form == "tucker2" else 2)
        x = rng.standard_normal((2, 5, 9, 10)).astype(np.float32)
        np.testing.assert_allclose(parts.forward(x, "NCHW"), conv.forward(x, "NCHW"), rtol=1e-4, atol=1e-4)


def test_forms_count_what_their_factors_multiply():
    conv = Conv2d(64, 64, 3, padding=1)
    shape = (64, 8, 8)
    full = 64 * 9 * 64 * 8 * 8
    spatial = factor_layer(conv, 16, "spatial")        # 3x1 (64 -> 16) then 1x3 (16 -> 64)
    tucker = factor_layer(conv, (16, 8), "tucker2")     # 1x1 64->8, 3x3 8->16, 1x1 16->64
    macs = {k: count_ops(tabconv_np.Network(v, shape), shape).total["macs"]
            for k, v in (("spatial", spatial), ("tucker", tucker))}
    assert macs["spatial"] == 8 * 8 * (64 * 3 * 16 + 16 * 3 * 64) < full
    assert macs["tucker"] == 8 * 8 * (64 * 8 + 8 * 9 * 16 + 16 * 64) < full


def test_cli_converts_with_lowrank_and_refuses_options_of_other_methods(tmp_path, capsys):
    import json
    from tabconv_np.cli import main
    from tabconv_np.cli.convert import METHOD_DEFAULTS
    from tabconv_np.conversion.lowrank import LowRankSettings
    d = LowRankSettings()
    assert METHOD_DEFAULTS["lowrank"] == {"rank": d.rank, "energy": d.energy, "form": d.form, "refine": d.refine,
                                          "macs": str(d.macs).lower()}
    src, out = os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5"), tmp_path / "lr.h5"
    assert main(["convert", src, "-o", str(out), "--method", "lowrank", "--form", "tucker2", "--energy", "0.8",
                 "--switches", ",".join(map(str, SWITCHES)), "--dataset", "sample", "--calib", "40",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert "--method lowrank --rank auto --energy 0.8 --form tucker2 --refine exact" in r["command_line"]
    assert main(["ops", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["macs"] < count_ops(tabconv_np.load(src)).total["macs"]
    assert main(["eval", str(out), "--dataset", "sample", "--limit", "20", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.5
    for bad in (["--rank", "4"], ["--method", "lowrank", "--prototypes", "16"],
                ["--encoder", "tree", "--method", "lowrank"]):
        assert main(["convert", src, "-o", str(tmp_path / "x.h5")] + bad) == 2
        assert "--" in capsys.readouterr().err
