"""Conversion to table networks: switches, masking, determinism, refit, op accounting, CLI, demo."""
import json
import os
import warnings

import numpy as np
import pytest

from tabconv_np import count_ops
from tabconv_np.cli import main
from tabconv_np.conversion import (convert, cosine_similarity, find_switches, op_reduction,
                                priority_mask)
from tabconv_np.errors import ConfigError, SettingWarning, ShapeError
from tabconv_np.io import load, save
from tabconv_np.layers import Conv2d, Linear
from tabconv_np.models import build
from tabconv_np.tables import TableConv2d, TableLinear, warmup
from helpers import randomize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_MODEL = os.path.join(REPO, "weights", "resnet18-paper_fashion-mnist.h5")


@pytest.fixture(scope="module", autouse=True)
def warm():
    warmup()


@pytest.fixture(scope="module")
def lenet():
    return randomize(build("lenet", 1, 10), seed=1)


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (60, 1, 28, 28)).astype(np.uint8)


def _quiet_convert(*a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(*a, progress=False, **kw)


@pytest.mark.parametrize("arch, n", [("resnet18-paper", 10), ("resnet34-paper", 18),
                                     ("resnet18-cifar", 10), ("nin", 9), ("lenet", 5)])
def test_switch_counts(arch, n):
    sw = find_switches(build(arch, 1, 10).body)
    assert len(sw) == n
    if arch.startswith("resnet"):
        assert sw[0].name == "conv1" and sw[-1].name == "fc"
        assert sw[1].name == "layer1.0"
        # the first block of every stage of the "paper" variant has a shortcut conv
        assert sw[1].leaves == (["layer1.0.conv1", "layer1.0.conv2", "layer1.0.downsample.0"]
                                if "paper" in arch else ["layer1.0.conv1", "layer1.0.conv2"])


def test_priority_mask_picks_largest_drops():
    sims = [0.99, 0.98, 0.80, 0.79, 0.50]
    masked, drops = priority_mask(sims, 40)            # floor(40 * 5 / 100) = 2
    np.testing.assert_allclose(drops, [0.01, 0.01, 0.18, 0.01, 0.29])
    assert masked == [2, 4]
    assert priority_mask(sims, 20)[0] == [4]
    assert priority_mask(sims, 19)[0] == []            # floor(0.95) = 0
    assert priority_mask(sims, 40, candidates=[1, 1, 1, 1, 0])[0] == [2, 0]  \
        or priority_mask(sims, 40, candidates=[1, 1, 1, 1, 0])[0] == [0, 2]
    # an increase of similarity is not a drop: the sign matters (the public code's slip)
    assert priority_mask([0.5, 0.9, 0.8], 34)[0] == [0]
    with pytest.raises(ConfigError):
        priority_mask(sims, 120)


def test_masking_keeps_the_damaged_switch_exact(lenet, calib):
    # conv1 is near exact (one pixel per subspace, 256 prototypes), conv2 gets K = 2 (crude),
    # the rest K = 64: conv2's similarity drop is the largest
    res = _quiet_convert(lenet, calib, codebooks={"conv1": 25, "*": 2},
                         prototypes={"conv1": 256, "conv2": 2, "*": 64}, mask_rate=20,
                         refit_classifier=False, iters=3)
    assert len(res.switches) == 5
    assert res.masked == ["conv2"] and res.on == [True, False, True, True, True]
    i = res.drops.index(max(res.drops))
    assert res.switches[i] == "conv2"
    body = res.network.body
    assert isinstance(body.children["conv2"], Conv2d)
    assert isinstance(body.children["conv1"], TableConv2d)
    assert isinstance(body.children["fc3"], TableLinear)
    # masking conv2 makes the network closer to the exact one
    assert res.final_similarities[-1] > res.similarities[-1]


def test_conversion_is_deterministic_for_a_seed(lenet, calib):
    kw = dict(codebooks=[1, 4, 8, 4, 2], prototypes=16, iters=4)
    a = _quiet_convert(lenet, calib, seed=5, **kw)
    b = _quiet_convert(lenet, calib, seed=5, **kw)
    c = _quiet_convert(lenet, calib, seed=6, **kw)
    sa, sb, sc = (r.network.state_dict() for r in (a, b, c))
    assert sa.keys() == sb.keys()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not all(np.array_equal(sa[k], sc[k]) for k in sa)
    assert a.similarities == b.similarities


def test_resnet_conversion_refit_and_round_trip(tmp_path):
    net = randomize(build("resnet18-paper", 1, 10), seed=2)
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (24, 1, 28, 28)).astype(np.uint8)
    res = _quiet_convert(net, imgs, codebooks="D/64", prototypes=8, iters=2,
                         switches=[0] + [1] * 9, max_rows=500)
    tnet = res.network
    assert res.on[0] is False and isinstance(tnet.body.children["conv1"], Conv2d)
    tables = [n for n, m in tnet.body.modules() if isinstance(m, (TableConv2d, TableLinear))]
    assert len(tables) == 8 * 2 + 4 + 1                 # 16 block convs, 4 shortcuts, fc
    assert any("subsample" in n for n in res.notes)     # layer1 has 24*49 > 500 rows
    # the refit lowers the calibration error to the exact logits
    assert res.refit["layer"] == "fc" and res.refit["mse_after"] <= res.refit["mse_before"]
    unrefit = res.network_without_refit()
    assert unrefit.body.children["fc"] is not tnet.body.children["fc"]
    x = imgs[:5]
    assert unrefit.predict(x).shape == (5, 10)
    # every leaf record: D, C = ceil(D/64), K <= 8
    for r in res.layers:
        assert r["C"] == -(-r["D"] // 64) and r["K"] <= 8
    path = tmp_path / "r18_tables.h5"
    save(tnet, path)
    back = load(path)
    assert np.array_equal(back.predict(x), tnet.predict(x))
    assert back.meta["tabconv"]["on"] == [0] + [1] * 9
    # both layouts give the same predictions up to float rounding
    nhwc = back.copy()
    nhwc.layout = "NHWC"
    np.testing.assert_allclose(nhwc.predict(x), tnet.predict(x), rtol=1e-3, atol=1e-3)


def test_calibrate_exact_and_approx_differ(lenet, calib):
    a = _quiet_convert(lenet, calib, codebooks=2, prototypes=16, iters=3, calibrate="approx")
    e = _quiet_convert(lenet, calib, codebooks=2, prototypes=16, iters=3, calibrate="exact")
    pa = a.network.state_dict()
    pe = e.network.state_dict()
    assert np.array_equal(pa["conv1.prototypes"], pe["conv1.prototypes"])   # same input
    assert not np.array_equal(pa["conv2.prototypes"], pe["conv2.prototypes"])


def test_op_reduction_by_hand(lenet, calib):
    res = _quiet_convert(lenet, calib, codebooks=2, prototypes=8, iters=2, switches=[1, 0, 1, 1, 1])
    red = op_reduction(res.network, res.exact)
    exact = count_ops(res.exact).total
    # conv1: 28*28 rows, M=6, C=2; conv2 exact (macs); fc1..3 one row each, C=2
    lookups = 784 * 6 * 2 + 120 * 2 + 84 * 2 + 10 * 2
    adds = 784 * 6 * 1 + 120 + 84 + 10
    conv2_macs = 16 * 10 * 10 * 6 * 25
    assert red["paper"]["cost"] == lookups + adds + conv2_macs
    assert red["paper"]["exact"] == exact["macs"]
    assert red["paper"]["reduction"] == pytest.approx(1 - (lookups + adds + conv2_macs) / exact["macs"])
    assert red["full"]["exact"] == exact["ops"] and red["full"]["cost"] == count_ops(res.network).total["ops"]
    assert "encoding" in red["full"]["convention"] and "not counted" in red["paper"]["convention"]
    assert red["storage"]["replaced_weight_bytes"] == 4 * (6 * 25 + 6 + 120 * 400 + 120 + 84 * 120 + 84 + 10 * 84 + 10)
    off = _quiet_convert(lenet, calib, switches=[0] * 5)
    assert op_reduction(off.network, off.exact)["paper"]["reduction"] == 0


def test_bad_arguments(lenet, calib):
    with pytest.raises(ConfigError, match="one per switch"):
        convert(lenet, calib, switches=[1, 1])
    with pytest.raises(ConfigError, match="unknown switch"):
        convert(lenet, calib, prototypes={"nope": 4})
    with pytest.raises(ConfigError, match="prototypes"):
        convert(lenet, calib, prototypes=0)
    with pytest.raises(ConfigError, match="codebooks"):
        convert(lenet, calib, codebooks="D/x")
    with pytest.raises(ShapeError):
        convert(lenet, calib[:, :, :20])
    with pytest.raises(ConfigError):
        convert(lenet, calib, mask_rate=150)
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0


def test_cli_convert_ops(tmp_path, lenet, capsys):
    src, out = tmp_path / "lenet.h5", tmp_path / "lenet_tables.h5"
    save(lenet, src)
    rc = main(["convert", str(src), "-o", str(out), "--codebooks", "2", "--prototypes", "8",
               "--calib", "40", "--iters", "2", "--mask-rate", "20", "--dataset", "sample", "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert len(rep["masked"]) == 1 and rep["op_reduction"]["paper"]["convention"]
    assert main(["ops", str(out), "--json"]) == 0
    ops = json.loads(capsys.readouterr().out)
    assert ops["total"]["lookups"] > 0
    assert load(out).meta["tabconv"]["calibration_dataset"] == "sample/train"
    assert main(["eval", str(out), "--dataset", "sample", "--limit", "20", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["images"] == 20 and 0 <= ev["accuracy"] <= 1
    assert main(["convert", str(src), "-o", str(out), "--switches", "1,0"]) == 2


@pytest.mark.skipif(not os.path.exists(DEMO_MODEL), reason="demo weights not present")
def test_demo_json_small(capsys):
    rc = main(["demo", "--json", "--calib", "100", "--test", "100", "--prototypes", "16",
               "--codebooks", "D/64", "--no-latency"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    for k in ("exact_accuracy", "table_accuracy", "retention", "storage_bytes", "seconds"):
        assert isinstance(r[k], (int, float))
    assert set(r["op_reduction"]) == {"paper", "full", "bolt"}
    assert 0 < r["op_reduction"]["paper"] < 1 and r["exact_accuracy"] > 0.5
    # the fast setting first, the paper-faithful one beside it
    assert r["method"] == "maddness" and set(r["compare"]) == {"tabconv"}
    assert r["storage_bytes"] < r["weights_bytes"]
    assert r["op_reduction"]["full"] > 0.5 and "full" in r["compare"]["tabconv"]["op_reduction"]


@pytest.mark.skipif(not os.path.exists(DEMO_MODEL), reason="demo weights not present")
def test_demo_speedup_and_save(capsys, tmp_path):
    out = tmp_path / "fast.h5"
    rc = main(["demo", "--json", "--method", "maddness", "--calib", "60", "--test", "40",
               "--save", str(out)])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["speedup"]) == {"batch1", "batch32"} and all(v > 0 for v in r["speedup"].values())
    assert "compare" not in r and r["saved"] == str(out)
    net = load(str(out))
    assert net.meta["maddness"]["on"] == r["on"]


def test_glob_settings_structure_and_switch_similarities(lenet, calib):
    from tabconv_np.conversion import switch_similarities, table_structure
    net = build("resnet18-paper", 1, 10)
    t = table_structure(net, {"*.downsample.*": 2, "layer4.*": "D/128", "*": 4}, 16,
                        switches=[0] + [1] * 8 + [0])
    mods = dict(t.body.modules())
    assert mods["layer1.0.downsample.0"].n_codebooks == 2
    assert mods["layer4.1.conv2"].n_codebooks == 36 and mods["layer3.0.conv1"].n_codebooks == 4
    assert isinstance(mods["conv1"], Conv2d) and isinstance(mods["fc"], Linear)
    with pytest.raises(ConfigError, match="unknown"):
        table_structure(net, {"nothing.*": 2, "*": 4}, 16)
    with pytest.raises(ConfigError, match="no value"):
        table_structure(net, {"layer1.*": 2}, 16)
    res = _quiet_convert(lenet, calib, codebooks=2, prototypes=8, iters=2, refine="exact")
    sims = switch_similarities(res.network, res.exact, calib[:10])
    assert list(sims) == res.switches and all(-1 <= v <= 1 for v in sims.values())
    same = switch_similarities(res.exact, res.exact, calib[:5])
    assert all(v == pytest.approx(1.0) for v in same.values())
    labels = np.zeros(20, np.int64)
    acc = res.accuracies(calib[:20], labels)
    assert set(acc) == {"table", "without_refit", "seconds", "predictions"}
    np.testing.assert_array_equal(acc["predictions"], res.network.predict(calib[:20]).argmax(1))
    assert acc["table"] == np.mean(acc["predictions"] == labels)


def test_cli_setting_parser():
    from tabconv_np.demo import parse_setting
    assert parse_setting("8", int) == 8 and parse_setting("D/32", str) == "D/32"
    assert parse_setting("4,8,D/32", str) == [4, 8, "D/32"]
    assert parse_setting("layer1.*=D/28,*=6", str) == {"layer1.*": "D/28", "*": 6}
    with pytest.raises(ConfigError):
        parse_setting("D/32", int)
    with pytest.raises(ConfigError):
        parse_setting("a=1,b", int)


def test_settings_that_do_not_do_what_they_say_warn_before_the_work(lenet, calib):
    from tabconv_np.conversion import table_structure
    net = build("resnet18-paper", 1, 10)
    with pytest.warns(SettingWarning, match=r"conv1: 8 subspaces of ceil\(9/8\) = 2 columns leave 3 of them "
                      "zero padding only"):
        table_structure(net, 8, 16)                          # the stem: D = 9 columns
    with pytest.warns(SettingWarning) as caught:
        table_structure(net, 100000, 16)
    assert len(caught) == 1 and "clamped" in str(caught[0].message) and "more layers" in str(caught[0].message)
    with pytest.raises(ConfigError, match="leave 1 of them empty"):          # before any tree is fitted
        convert(lenet, calib, method="maddness", codebooks={"conv1": 8, "*": "auto"}, progress=False)
