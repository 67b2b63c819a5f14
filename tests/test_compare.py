"""``tabconv compare``: rows per method with the documented fields, resuming, the budget search,
plans through ``convert --plan``, refusals.

The network: LeNet with random convolutions and its classifier fitted in closed form (ridge) on the
shipped Fashion-MNIST sample's training images, so that accuracies mean something; a few dozen
images per split, so that a run takes seconds.
"""
import contextlib
import io
import json

import numpy as np
import pytest

from tabconv_np import count_ops, load, save
from tabconv_np.budget import Option, greedy, options, parse_budget
from tabconv_np.cli import main
from tabconv_np.compare import METHODS, Context, split_images
from tabconv_np.conversion import METHODS as REGISTERED
from tabconv_np.conversion.mixed import convert_plan, read_plan
from tabconv_np.conversion.refit import ridge
from tabconv_np.data import load_dataset
from tabconv_np.errors import ConfigError
from tabconv_np.evaluate import layer_inputs
from tabconv_np.layers import Conv2d, Linear
from tabconv_np.models import build

from helpers import randomize

#: The documented fields of a result row (tabconv_np.compare's docstring, docs/compare.md).
FIELDS = {"key", "method", "settings", "label", "accuracy", "val_accuracy", "retention", "agreement",
          "own_units", "ops", "storage_bytes", "storage_ratio", "latency", "latency_ms", "conversion_s",
          "switches"}
SWITCH_FIELDS = {"converted", "val_drop", "val_loss_increase", "full_ops", "storage_bytes", "seconds"}
SMALL = ["--calib", "40", "--val", "30", "--test", "60", "--repeats", "1"]


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    net = randomize(build("lenet", 1, 10))
    x, y = load_dataset("sample", "train")
    fc = dict(net.body.modules())["fc3"]
    (_, _, feats), = layer_inputs(net, x, lambda m: m is fc)
    W, b, _ = ridge(feats, 10.0 * np.eye(10)[y], 1e-3)
    fc.params["weight"][...] = W
    fc.params["bias"][...] = b
    net.meta["dataset"] = "fashion-mnist"
    path = tmp_path_factory.mktemp("compare") / "lenet.h5"
    save(net, path)
    return str(path)


def compare(args, capsys):
    rc = main(["compare", *args])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out), err


@pytest.fixture(scope="module")
def run(lenet, tmp_path_factory):
    """One compare run with a budget (int8 and prune), its JSON and its folder."""
    d = tmp_path_factory.mktemp("run")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["compare", lenet, "--methods", "int8,prune", *SMALL, "--budget", "ops=70%",
                     "--report", str(d), "--json"]) == 0
    return json.loads(out.getvalue()), d


def test_one_row_per_setting_of_each_requested_method_with_the_documented_fields(run):
    doc, _ = run
    assert [r["method"] for r in doc["results"]] == ["int8"] * len(METHODS["int8"].grid) + \
        ["prune"] * len(METHODS["prune"].grid)
    exact = doc["exact"]
    for r in [exact] + doc["results"]:
        assert set(r) == FIELDS
        assert set(r["latency"]) == {"b1", "b32"} and all(v > 0 for v in r["latency_ms"].values())
        assert r["retention"] == pytest.approx(r["accuracy"] / exact["accuracy"])
        assert r["ops"]["full_ratio"] == pytest.approx(exact["ops"]["full"] / r["ops"]["full"])
        assert set(r["switches"]) == {"conv1", "conv2", "fc1", "fc2", "fc3"}
        for s in r["switches"].values():
            assert set(s) == SWITCH_FIELDS
    assert exact["accuracy"] > 0.5                        # the ridge classifier is a real one
    int8 = doc["results"][0]
    assert int8["own_units"]["name"] == "int8_macs" and int8["own_units"]["value"] > 0
    assert int8["storage_ratio"] > 3                      # float32 -> int8 weights
    assert all(s["converted"] and s["val_drop"] is not None for s in int8["switches"].values())
    assert all(s["val_loss_increase"] is not None for s in int8["switches"].values())
    pruned = doc["results"][-1]                           # prune keeps Linear layers exact
    assert [n for n, s in pruned["switches"].items() if s["converted"]] == ["conv1", "conv2"]
    assert pruned["ops"]["macs"] < exact["ops"]["macs"]


def test_a_budget_the_exact_network_meets_keeps_it_exact(lenet, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    doc, _ = compare([lenet, "--methods", "int8", *SMALL, "--budget", "ops=100%", "--plan", str(plan), "--json",
                      "--results", str(tmp_path / "r.jsonl")], capsys)
    s = doc["search"]
    assert set(s["choice"].values()) == {None}
    assert set(read_plan(plan)["switches"].values()) == {"exact"}
    assert s["row"]["accuracy"] == doc["exact"]["accuracy"]
    assert s["row"]["ops"]["full"] == doc["exact"]["ops"]["full"] and s["meets_budget"]


@pytest.mark.parametrize("budget", ["storage=40%", "latency=70%"])
def test_storage_and_latency_budgets_give_a_measured_plan(lenet, tmp_path, capsys, budget):
    doc, _ = compare([lenet, "--methods", "int8", *SMALL, "--budget", budget, "--json",
                      "--results", str(tmp_path / "r.jsonl")], capsys)
    s = doc["search"]
    assert s["budget"]["kind"] == budget.split("=")[0] and 1 <= s["attempts"] <= 3
    if budget.startswith("storage"):                      # int8 weights: a quarter of the bytes
        assert s["meets_budget"] and s["row"]["storage_bytes"] <= s["budget"]["limit"]
        assert set(s["choice"].values()) - {None}
    else:                                                 # timings: only that it was measured and said
        assert isinstance(s["meets_budget"], bool) and s["row"]["latency"]["b1"] > 0


def test_the_plan_meets_its_budget_and_round_trips_through_convert_plan(run, lenet, tmp_path, capsys):
    doc, d = run
    s = doc["search"]
    assert s["budget"]["limit"] == pytest.approx(0.7 * doc["exact"]["ops"]["full"])
    assert s["meets_budget"] and s["row"]["ops"]["full"] <= s["budget"]["limit"]
    assert any(k is not None for k in s["choice"].values())
    plan = read_plan(d / "plan.json")
    # the plan's row is what convert_plan gives on the run's own calibration images
    net = load(lenet)
    split = split_images(net, 40, 30, test=60)
    converted, _ = convert_plan(net, split.calib, plan)
    assert np.mean(converted.predict(split.test).argmax(1) == split.test_labels) == s["row"]["accuracy"]
    # and tabconv convert --plan builds the same layers, switch by switch
    out = tmp_path / "planned.h5"
    assert main(["convert", lenet, "-o", str(out), "--plan", str(d / "plan.json"), "--calib", "40",
                 "--dataset", "sample"]) == 0
    capsys.readouterr()
    got = load(str(out))
    mods = dict(got.body.modules())
    for name, choice in plan["switches"].items():
        assert isinstance(mods[name], (Conv2d, Linear)) == (choice == "exact"), name
    assert got.meta["plan"] == plan
    assert count_ops(got).total["full"] == s["row"]["ops"]["full"]


def test_resume_skips_finished_results(lenet, tmp_path, capsys, monkeypatch):
    results = str(tmp_path / "r.jsonl")
    first, _ = compare([lenet, "--methods", "int8", *SMALL, "--results", results, "--json"], capsys)
    calls = []
    real = Context.convert
    monkeypatch.setattr(Context, "convert", lambda self, m, s: calls.append(m) or real(self, m, s))
    second, err = compare([lenet, "--methods", "int8,prune", *SMALL, "--results", results, "--json"], capsys)
    assert calls == ["prune"] * len(METHODS["prune"].grid)
    assert "finished before" in err
    assert second["results"][:len(first["results"])] == first["results"]
    # a run killed while writing its last line: that result is done again, the others are kept
    with open(results) as f:
        lines = f.readlines()
    with open(results, "w") as f:
        f.writelines(lines[:-1] + [lines[-1][:40]])
    calls.clear()
    third, _ = compare([lenet, "--methods", "int8,prune", *SMALL, "--results", results, "--json"], capsys)
    assert calls == ["prune"] and third["results"][:-1] == second["results"][:-1]
    # a results file of another run (here: another seed) is refused, not mixed in
    assert main(["compare", lenet, "--methods", "int8", *SMALL, "--seed", "1", "--results", results]) == 2
    assert "another compare run" in capsys.readouterr().err


@pytest.mark.parametrize("budget", ["ops", "ops=", "ops=-5%", "flops=50%", "latency=3kg", "storage=lots",
                                    "storage=0MiB"])
def test_bad_budgets_are_refused_before_any_work(lenet, budget, capsys):
    with pytest.raises(ConfigError):
        parse_budget(budget)
    assert main(["compare", lenet, "--budget", budget]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tabconv compare: error: --budget") and len(err.strip().splitlines()) == 1


def test_budgets_parse_to_fractions_or_amounts():
    assert parse_budget("ops=40%").limit(1000) == pytest.approx(400)
    assert parse_budget("ops=12M").limit(1) == 12e6
    assert parse_budget("latency=2.5ms").limit(1) == pytest.approx(2.5e-3)
    assert parse_budget("storage=4MiB").limit(1) == 4 * 2 ** 20


def test_unknown_methods_and_bad_plans_get_the_projects_error(lenet, tmp_path, capsys):
    assert main(["compare", lenet, "--methods", "int8,nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
    bad = {"not a plan": {"switches": {}},
           "unknown method": {"format": "tabconv-plan", "version": 1, "switches": {"conv1": {"method": "nosuch"}}},
           "unknown switch": {"format": "tabconv-plan", "version": 1, "switches": {"layer9": "exact"}}}
    for what, plan in bad.items():
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(plan))
        assert main(["convert", lenet, "-o", str(tmp_path / "o.h5"), "--plan", str(p), "--calib", "4",
                     "--dataset", "sample"]) == 2, what
        assert "error:" in capsys.readouterr().err
        assert not (tmp_path / "o.h5").exists()
    p.write_text(json.dumps({"format": "tabconv-plan", "version": 1, "switches": {}}))
    assert main(["convert", lenet, "-o", str(tmp_path / "o.h5"), "--plan", str(p), "--method", "int8"]) == 2
    assert "--plan gives every switch" in capsys.readouterr().err


def test_every_method_of_the_table_is_a_conversion_method():
    assert set(METHODS) <= set(REGISTERED)
    for entry in METHODS.values():
        assert 1 <= len(entry.grid) <= 3


def test_greedy_takes_the_least_loss_per_operation_saved_and_takes_some_back():
    opts = {"a": [Option(None, 0.0, 100), Option("a1", 0.01, 50), Option("a2", 0.20, 10)],
            "b": [Option(None, 0.0, 100), Option("b1", 0.05, 60)]}
    choice, total = greedy(opts, 200, 200)
    assert {s: o.key for s, o in choice.items()} == {"a": None, "b": None} and total == 200
    choice, total = greedy(opts, 200, 150)
    assert {s: o.key for s, o in choice.items()} == {"a": "a1", "b": None} and total == 150
    choice, total = greedy(opts, 200, 70)                 # a1 (least loss per op saved), b1, then a2
    assert {s: o.key for s, o in choice.items()} == {"a": "a2", "b": "b1"} and total == 70
    choice, total = greedy(opts, 200, 5)                  # out of reach: the cheapest of everything
    assert {s: o.key for s, o in choice.items()} == {"a": "a2", "b": "b1"} and total == 70


def test_a_switch_that_alone_seems_to_help_counts_as_harmless_not_helpful(run):
    doc, _ = run
    rows = [dict(r, switches={n: dict(f, val_loss_increase=-0.5 if f["converted"] else None)
                              for n, f in r["switches"].items()}) for r in doc["results"]]
    opts = options(rows, doc["exact"], "ops")
    assert all(o.loss == 0.0 for os in opts.values() for o in os)
    assert [o.key for o in opts["fc3"]] == [None] + [r["key"] for r in rows if r["method"] == "int8"]


def test_report_without_matplotlib_says_how_to_get_the_plots(run, tmp_path, monkeypatch):
    from tabconv_np import compare_report
    doc, d = run
    text = (d / "report.md").read_text()
    assert "| exact | – |" in text and "## Per-layer plan under a budget" in text
    if compare_report.pyplot() is not None:
        for name in compare_report.PLOTS:
            assert (d / f"{name}.png").stat().st_size < 200_000
            assert f"![{name}]({name}.png)" in text
    monkeypatch.setattr(compare_report, "pyplot", lambda: None)
    compare_report.write_report(str(tmp_path), doc, "tabconv compare x.h5")
    text = (tmp_path / "report.md").read_text()
    assert compare_report.NO_PLOTS in text and not list(tmp_path.glob("*.png"))


def test_own_images_are_split_three_ways_by_class(lenet, tmp_path):
    x, y = load_dataset("sample", "train")
    path = tmp_path / "mine.npz"
    np.savez(path, images=x[:300], labels=y[:300])
    split = split_images(load(lenet), 40, 30, data=str(path))
    assert len(split.test) == 100 and len(split.val) == 30 and len(split.calib) == 40
    assert np.bincount(split.test_labels, minlength=10).tolist() == [10] * 10
    seen = {a.tobytes() for a in split.test}
    assert not any(a.tobytes() in seen for a in np.concatenate([split.val, split.calib]))


def test_a_setting_the_method_refuses_is_said_and_the_others_go_on(lenet, tmp_path, capsys):
    doc, err = compare([lenet, "--methods", "int8,prune", "--calib", "20", "--val", "30", "--test", "40",
                        "--repeats", "1", "--json", "--results", str(tmp_path / "r.jsonl")], capsys)
    assert [r["method"] for r in doc["results"]] == ["prune"] * len(METHODS["prune"].grid)
    assert [r["label"].split()[0] for r in doc["refused"]] == ["int8"] * len(METHODS["int8"].grid)
    assert "needs at least 32" in doc["refused"][0]["error"] and "refused" in err


def test_channel_pruning_across_two_switches_of_a_chain_is_no_option_alone(lenet, tmp_path, capsys):
    # LeNet's conv2 loses input channels and conv1 the same filters: neither fits the exact other
    doc, _ = compare([lenet, "--methods", "channels", *SMALL, "--budget", "ops=80%", "--json",
                      "--results", str(tmp_path / "r.jsonl")], capsys)
    for r in doc["results"]:
        assert [n for n, s in r["switches"].items() if s["converted"]] == ["conv1", "conv2"]
        assert all(s["val_loss_increase"] is None for s in r["switches"].values())
    assert set(doc["search"]["choice"].values()) == {None} and not doc["search"]["meets_budget"]
