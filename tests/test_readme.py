"""The README's key figures are what the commands it names print on the shipped files.

Operation counts and storage exactly (``count_ops`` / ``op_reduction`` of the
networks the demo builds, without data); accuracies from weights/MANIFEST.json;
the weights table is what ``bench/weights_table.py`` prints; every command
runs through the virtual environment of the set-up lines.
"""
import contextlib
import importlib.util
import io
import json
import os
import re

import pytest

import tabconv_np
from tabconv_np.conversion import op_reduction, skeleton
from tabconv_np.demo import DEFAULT_MODEL, METHODS
from tabconv_np.models import build

ROOT = os.path.join(os.path.dirname(__file__), "..")
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
MANIFEST = os.path.join(ROOT, "weights", "MANIFEST.json")
DEMO_MODEL = os.path.join(ROOT, DEFAULT_MODEL)


def shell_lines():
    """Lines of the README's ``sh`` blocks."""
    return [line for block in re.findall(r"```sh\n(.*?)```", README, re.S) for line in block.splitlines()]


def test_setup_lines_and_every_command_use_the_venv():
    lines = shell_lines()
    assert lines[0] == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/tabconv demo"
    assert lines[1] == 'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest -q'
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert lines[1] in ci                                    # CI runs the README's test command
    for line in lines:
        for cmd in re.findall(r"(?:^|&& )(\S+)", line.split("#")[0]):
            assert cmd.startswith((".venv/bin/", "python3")), f"not through the venv: {line}"
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    bare = re.findall(r"`(?:tabconv|python|pip) (?!import:)", prose)
    assert not bare, bare


def test_long_commands_say_how_long_they_take():
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        if "tabconv convert" in block:
            assert re.search(r"# about [\d-]+ minutes", block), block
    first = README.split("\n\n")[2]                    # the paragraph after the set-up lines
    assert "(about 2-4 minutes on 2 cores" in " ".join(first.split())


def test_no_file_outside_the_repository_is_cited():
    for target in re.findall(r"\]\(([^)#]+)", README):
        if not target.startswith("http"):
            assert os.path.exists(os.path.join(ROOT, target)), target
    assert "RESEARCH.md" not in README and "../" not in README
    assert not re.search(r"\d\s?MB\b", README)                    # MiB throughout


def test_op_counts_of_the_ops_section():
    macs = tabconv_np.count_ops(build("resnet18-cifar", 3, 10, input_size=32)).total["macs"]
    assert f"total.macs = {macs:,} ({macs / 1e6:.2f} M)" in README
    text = re.search(r"3x32x32 input, 10 classes: (.*?)\(\+", README, re.S).group(1)
    for arch, name in (("resnet18-cifar", "ResNet-18 cifar"), ("resnet34-cifar", "ResNet-34 cifar"),
                       ("resnet18-paper", "ResNet-18 paper"), ("resnet34-paper", "ResNet-34 paper"),
                       ("nin", "NIN")):
        m = tabconv_np.count_ops(build(arch, 3, 10, input_size=32)).total["macs"]
        assert f"{name} {m / 1e6:.2f} M" in " ".join(text.split()), name


@pytest.mark.skipif(not os.path.exists(MANIFEST), reason="shipped weights not present")
def test_weights_table_is_what_its_command_prints():
    spec = importlib.util.spec_from_file_location("weights_table", os.path.join(ROOT, "bench", "weights_table.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        mod.main()
    for line in out.getvalue().splitlines():
        assert line in README, line


@pytest.mark.skipif(not os.path.exists(DEMO_MODEL), reason="demo weights not present")
def test_demo_table_counts_storage_and_exact_accuracy():
    net = tabconv_np.load(DEMO_MODEL)
    exact = tabconv_np.fold_batchnorm(net)
    sample_acc = json.load(open(MANIFEST))["files"][os.path.basename(DEMO_MODEL)]["sample_test_accuracy"]
    rows = {"maddness": "| fast: hash trees", "tabconv": "| paper-faithful: PQ tables"}
    for method, start in rows.items():
        row = next(line for line in README.splitlines() if line.startswith(start))
        cells = [c.strip() for c in row.strip("|").split("|")]
        kw = {k: v for k, v in METHODS[method].items() if k in ("codebooks", "prototypes", "switches")}
        red = op_reduction(skeleton(net, method, **kw), exact)
        p, f, st = red["paper"], red["full"], red["storage"]
        assert cells[1] == f"{100 * sample_acc:.1f}%"
        assert cells[4] == f"{100 * (1 - p['cost'] / p['exact']):.1f}% fewer ({p['cost'] / 1e6:.2f} M vs {p['exact'] / 1e6:.2f} M)"
        full = (f"{100 * (1 - f['cost'] / f['exact']):.1f}% fewer" if f["cost"] < f["exact"]
                else f"{f['cost'] / f['exact']:.1f}x more")
        assert cells[5] == f"{full} ({f['cost'] / 1e6:.2f} M vs {f['exact'] / 1e6:.2f} M)"
        ratio = st["network_bytes"] / st["exact_network_bytes"]
        size = f"{ratio:.2f}x the weights" if ratio < 1 else f"{ratio:.1f}x the weights"
        assert cells[6] == f"{st['network_bytes'] / 2**20:.1f} MiB ({size})"
        assert f"float32 weights {st['exact_network_bytes'] / 2**20:.1f} MiB" in README


@pytest.mark.skipif(not os.path.exists(MANIFEST), reason="shipped weights not present")
def test_eval_figures_are_the_manifest_accuracies():
    files = json.load(open(MANIFEST))["files"]
    r18 = files["resnet18-paper_fashion-mnist.h5"]
    assert f"the shipped sample: {100 * r18['sample_test_accuracy']:.2f}%" in README
    assert f"# {100 * r18['tabconv_np_test_accuracy']:.2f}%, needs the Debian package" in README
    assert f"the MNIST subset: {100 * files['nin_mnist.h5']['tabconv_np_test_accuracy']:.2f}%" in README
    assert f"# {r18['sample_test_accuracy']:g}" in README
    params = tabconv_np.count_ops(tabconv_np.load(os.path.join(ROOT, "weights", "resnet18-paper_fashion-mnist.h5"))).total["params"]
    assert f"{params:,} parameters (BN running statistics not counted)" in README


def test_onnx_operator_table_is_generated_from_the_importer():
    from tabconv_np.importers.onnx_import import operators_markdown
    block = re.search(r"<!-- onnx operators: generated by [^>]*-->\n(.*?)\n<!-- end of onnx operators -->",
                      README, re.S)
    assert block and block.group(1) == operators_markdown(), \
        "regenerate the README's ONNX table from tabconv_np.importers.onnx_import.operators_markdown()"


def test_keras_layer_list_is_generated_from_the_importer():
    from tabconv_np.importers.keras import layers_markdown
    block = re.search(r"<!-- keras layers: generated by [^>]*-->\n(.*?)\n<!-- end of keras layers -->", README, re.S)
    assert block and block.group(1) == layers_markdown(), \
        "regenerate the README's Keras list from tabconv_np.importers.keras.layers_markdown()"
