"""The int8 conversion method: calibration, accuracy on the shipped ResNet-18, settings, files, CLI."""
import json
import os

import numpy as np
import pytest

import tabconv_np
from tabconv_np.cli import main
from tabconv_np.conversion import convert, skeleton
from tabconv_np.conversion.int8 import Int8Settings, input_range
from tabconv_np.errors import ConfigError
from tabconv_np.int8 import Int8Conv2d, Int8Linear
from tabconv_np.ops import count_ops

WEIGHTS = os.path.join(os.path.dirname(__file__), os.pardir, "weights")
R18 = os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5")


@pytest.fixture(scope="module")
def data(r18_sample):
    return r18_sample(200, 300)


@pytest.fixture(scope="module")
def converted(data):
    net, xc, _, _ = data
    return convert(net, xc, method="int8", progress=False)


def test_int8_resnet18_keeps_accuracy_and_counts_int8_macs(data, converted):
    net, _, xt, yt = data
    res = converted
    exact = net.predict(xt).argmax(1)
    pred = res.network.predict(xt).argmax(1)
    assert np.mean(pred == yt) >= np.mean(exact == yt) - 0.01
    assert np.mean(pred == exact) >= 0.97
    assert all(r["rel_error"] < 0.03 for r in res.layers), [(r["name"], r["rel_error"]) for r in res.layers]
    kinds = {type(m) for _, m in res.network.body.modules()}
    assert Int8Conv2d in kinds and Int8Linear in kinds
    t, e = count_ops(res.network).total, count_ops(res.exact).total
    assert t["macs"] == 0 and t["int8_macs"] == e["macs"]
    w_exact = sum(m.params["weight"].nbytes for _, m in res.exact.body.modules() if "weight" in m.params
                  and m.params["weight"].ndim > 1)
    w_int8 = sum(m.params["weight"].nbytes for _, m in res.network.body.modules() if isinstance(m, (Int8Conv2d, Int8Linear)))
    assert w_int8 * 4 == w_exact
    meta = res.network.meta["int8"]["layers"]["conv1"]
    assert meta["activations"] == "asymmetric" and meta["range_rule"] == "minmax" and 0 <= meta["zero_point"] <= 255


def test_files_round_trip(converted, data, tmp_path):
    _, _, xt, _ = data
    path = tmp_path / "int8.h5"
    tabconv_np.save(converted.network, path)
    again = tabconv_np.load(path)
    x = converted.network.normalize(xt[:6])
    np.testing.assert_array_equal(again(x), converted.network(x))
    assert again.meta["int8"]["layers"] == json.loads(json.dumps(converted.network.meta["int8"]["layers"]))


def test_plan_runs_the_int8_layers(converted, data):
    from tabconv_np.plan import prepare
    x = converted.network.normalize(data[2][:5])
    np.testing.assert_array_equal(prepare(converted.network)(x), converted.network(x))


def test_per_layer_settings_and_the_percentile_rule(data):
    net, xc, _, _ = data
    res = convert(net, xc[:40], method="int8", progress=False, min_images=40, switches=[1] + [0] * 9,
                  activations={"conv1": "symmetric", "*": "asymmetric"}, range_rule="percentile", percentile=99.0)
    (rec,) = res.layers
    assert rec["activations"] == "symmetric" and rec["zero_point"] == 0 and rec["range"][0] == -rec["range"][1]
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    x[:5] = 1e3
    lo, hi = input_range(x, "percentile", 99.9, "asymmetric")
    assert -3.5 < lo < -3 and 3 < hi < 3.5
    assert input_range(x, "minmax", 99.9, "asymmetric")[1] == 1e3
    assert input_range(x, "percentile", 99.9, "symmetric") == (-input_range(x, "percentile", 99.9, "symmetric")[1],
                                                               input_range(x, "percentile", 99.9, "symmetric")[1])


def test_switches_and_masking_as_for_tables(data):
    net, xc, xt, _ = data
    res = convert(net, xc[:32], method="int8", progress=False, mask_rate=20, switches=[1] * 9 + [0])
    assert res.masked and len(res.masked) == 2 and not res.on[-1]
    mods = dict(res.network.body.modules())
    kept = {s for s in res.masked} | {"fc"}
    for name, m in mods.items():
        if type(m).__name__ in ("Conv2d", "Linear", "Int8Conv2d", "Int8Linear"):
            exact = name == "fc" or any(name == k or name.startswith(k + ".") for k in kept)
            assert isinstance(m, (Int8Conv2d, Int8Linear)) != exact, name
    assert np.isfinite(res.network.predict(xt[:10])).all()


@pytest.mark.parametrize("kw, match", [
    (dict(bits=4), "bits for conv1 must be one of \\[8\\].*got 4"),
    (dict(bits={"layer2.*": 16, "*": 8}), "bits for layer2.0.conv1 .*got 16"),
    (dict(activations="unsigned"), "activations for conv1 .*'unsigned'"),
    (dict(range_rule={"fc": "mean", "*": "minmax"}), "range_rule for fc .*'mean'"),
    (dict(percentile=40), "percentile for conv1 .*40"),
    (dict(min_images=1), "min_images"),
    (dict(), "int8 calibration of conv1 needs at least 32 images .*got 8"),
])
def test_bad_settings_name_the_layer_and_value(data, kw, match):
    net, xc, _, _ = data
    with pytest.raises(ConfigError, match=match):
        convert(net, xc[:8], method="int8", progress=False, **kw)


def test_skeleton_counts_without_data(data):
    net = data[0]
    sk = skeleton(net, "int8", switches=[0] + [1] * 9)
    t = count_ops(sk).total
    assert t["int8_macs"] > 0 and t["macs"] == count_ops(net).rows[0]["macs"]


def test_cli_convert_ops_eval(tmp_path, capsys):
    from tabconv_np.cli.convert import METHOD_DEFAULTS
    d = Int8Settings()
    assert METHOD_DEFAULTS["int8"] == {"bits": str(d.bits), "activations": d.activations, "range_rule": d.range_rule,
                             "percentile": str(d.percentile), "min_images": d.min_images}
    out = tmp_path / "q.h5"
    assert main(["convert", R18, "-o", str(out), "--method", "int8", "--dataset", "sample", "--calib", "40",
                 "--activations", "layer4.*=symmetric,*=asymmetric", "--switches", "1,1,1,1,1,1,1,1,1,0"]) == 0
    text = capsys.readouterr().out
    assert "--method int8 --bits 8 --activations 'layer4.*=symmetric,*=asymmetric' --range-rule minmax" in text
    assert "M int8 MACs" in text
    assert isinstance(dict(tabconv_np.load(out).body.modules())["layer4.1.conv2"], Int8Conv2d)
    assert main(["ops", str(out)]) == 0
    assert "int8_macs" in capsys.readouterr().out
    assert main(["eval", str(out), "--dataset", "sample", "--limit", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.8
    assert main(["convert", R18, "-o", str(tmp_path / "b.h5"), "--method", "int8", "--dataset", "sample",
                 "--calib", "40", "--bits", "conv1=4,*=8"]) == 2
    assert "bits for conv1" in capsys.readouterr().err
    assert main(["convert", R18, "-o", str(tmp_path / "b.h5"), "--method", "int8", "--codebooks", "8"]) == 2
    assert "--codebooks applies to --method tabconv, maddness, not int8" in capsys.readouterr().err
    assert main(["convert", R18, "-o", str(tmp_path / "b.h5"), "--percentile", "99"]) == 2
    assert "--percentile applies to --method int8, not tabconv" in capsys.readouterr().err
    assert not (tmp_path / "b.h5").exists()
