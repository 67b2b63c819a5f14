"""Importing PyTorch state dicts without torch: both torch.save formats, the bundled
architectures in both naming schemes, JSON specs, the CLI, refusal of unsafe pickles,
and corrupt files."""
import collections
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tabconv_np
from tabconv_np.cli import main
from tabconv_np.errors import ConfigError, ShapeError, UnsafePickleError, WeightFileError
from tabconv_np.importers import import_model, read_torch
from tabconv_np.importers.statedict import clean_state
from helpers import check_damaged, mutate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LENET_SPEC = {
    "input": [1, 28, 28],
    "layers": [
        {"type": "conv", "key": "features.0", "padding": 2}, {"type": "relu"},
        {"type": "maxpool", "kernel": 2},
        {"type": "conv", "key": "features.3"}, {"type": "relu"},
        {"type": "maxpool", "kernel": 2},
        {"type": "flatten"},
        {"type": "linear", "key": "classifier.0"}, {"type": "relu"},
        {"type": "dropout"},
        {"type": "linear", "key": "classifier.3"}, {"type": "relu"},
        {"type": "linear", "key": "classifier.5"},
    ],
}


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _lenet_like(torch):
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                          nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(nn.Linear(400, 120), nn.ReLU(), nn.Dropout(0.5),
                                            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    torch.manual_seed(1)
    return Net().eval()


def _randomize_bn(torch, model):
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
    return model.eval()


def _save(torch, obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def _to_cifar_names(state):
    out = collections.OrderedDict()
    for k, v in state.items():
        k = k.replace(".downsample.", ".shortcut.")
        out["linear." + k[3:] if k.startswith("fc.") else k] = v
    return out


@pytest.fixture(scope="module")
def resnet(torch, tmp_path_factory):
    sys.path.insert(0, os.path.join(ROOT, "weights"))
    try:
        from models_torch import build_torch
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    model = _randomize_bn(torch, build_torch("resnet18-paper", 1, 10))
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x).numpy()
    d = tmp_path_factory.mktemp("resnet")
    files = {}
    for scheme in ("torchvision", "cifar"):
        sd = model.state_dict()
        if scheme == "cifar":
            sd = _to_cifar_names(sd)
        for fmt in ("zip", "legacy"):
            files[scheme, fmt] = _save(torch, sd, str(d / f"r18_{scheme}_{fmt}.pt"), fmt)
    return files, x.numpy(), ref


@pytest.fixture(scope="module")
def lenet(torch, tmp_path_factory):
    model = _lenet_like(torch)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = model(x).numpy()
    d = tmp_path_factory.mktemp("lenet")
    files = {fmt: _save(torch, model.state_dict(), str(d / f"lenet_{fmt}.pt"), fmt)
             for fmt in ("zip", "legacy")}
    spec = d / "spec.json"
    spec.write_text(json.dumps(LENET_SPEC))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    np.savez(d / "state.npz", **state)
    return files, str(spec), x.numpy(), ref, model, str(d / "state.npz")


# --- real torch models ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("scheme", ["torchvision", "cifar"])
def test_resnet18_paper_matches_torch(resnet, scheme, fmt):
    files, x, ref = resnet
    net = import_model(files[scheme, fmt], arch="resnet18-paper", input_shape=(1, 16, 16))
    assert net.meta["arch"] == "resnet18-paper" and net.meta["source_format"] == f"torch-{fmt}"
    np.testing.assert_allclose(net(x), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_lenet_spec_matches_torch(lenet, fmt):
    files, spec, x, ref, _, _ = lenet
    net = import_model(files[fmt], spec=spec)
    assert net.input_shape == (1, 28, 28)
    np.testing.assert_allclose(net(x), ref, atol=1e-4, rtol=0)
    assert tabconv_np.count_ops(net).total["macs"] > 0


def test_spec_with_basic_blocks(resnet):
    files, x, ref = resnet
    layers = [{"type": "conv", "key": "conv1", "stride": 2, "padding": 1}, {"type": "bn", "key": "bn1"},
              {"type": "relu"}]
    for s in range(1, 5):
        layers += [{"type": "basicblock", "key": f"layer{s}.0", "stride": 2},
                   {"type": "basicblock", "key": f"layer{s}.1"}]
    layers += [{"type": "globalavgpool"}, {"type": "flatten"}, {"type": "linear", "key": "linear"}]
    net = import_model(files["cifar", "legacy"], spec={"input": [1, 16, 16], "layers": layers})
    np.testing.assert_allclose(net(x), ref, atol=1e-4, rtol=0)


def test_graph_spec_with_named_inputs(torch, tmp_path):
    nn = torch.nn

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            h = torch.relu(self.a(x))
            y = self.b(h) + h                       # no ReLU after the sum: not a BasicBlock
            return self.fc(y.mean((2, 3)))

    torch.manual_seed(6)
    model = Res().eval()
    path = _save(torch, model.state_dict(), str(tmp_path / "res.pt"), "zip")
    spec = {"input": [2, 6, 6], "layers": [
        {"type": "conv", "key": "a", "padding": 1}, {"type": "relu", "name": "h"},
        {"type": "conv", "key": "b", "padding": 1, "inputs": ["h"]},
        {"type": "add", "inputs": ["b", "h"]},
        {"type": "gap"}, {"type": "linear", "key": "fc"}]}
    net = import_model(path, spec=spec)
    assert type(net.body).__name__ == "Graph"
    x = np.random.default_rng(1).normal(size=(2, 2, 6, 6)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net(x), ref, atol=1e-4, rtol=0)
    tabconv_np.save(net, tmp_path / "res.h5")
    np.testing.assert_array_equal(tabconv_np.load(tmp_path / "res.h5")(x), net(x))
    with pytest.raises(ConfigError, match="input 'nope' is not a layer named before it"):
        import_model(path, spec=dict(spec, layers=spec["layers"][:3] + [{"type": "add", "inputs": ["b", "nope"]}]))


def test_cli_import_arch_then_load_eval_ops(resnet, tmp_path, capsys):
    files, x, ref = resnet
    out = str(tmp_path / "r18.h5")
    assert main(["import", files["cifar", "zip"], "-o", out, "--arch", "resnet18-paper",
                 "--input", "1x16x16", "--classes", "10"]) == 0
    said = capsys.readouterr().out
    assert "wrote" in said and "--dataset NAME" in said          # no data set recorded: eval will ask
    net = tabconv_np.load(out)
    assert "dataset" not in net.meta
    np.testing.assert_allclose(net(x), ref, atol=1e-4, rtol=0)
    assert main(["ops", out]) == 0
    assert main(["import", files["cifar", "zip"], "-o", out, "--arch", "resnet18-paper",
                 "--input", "1x16x16", "--dataset", "mnist", "--force"]) == 0
    assert tabconv_np.load(out).meta["dataset"] == "mnist"
    assert main(["import", files["cifar", "zip"], "-o", out, "--arch", "resnet18-paper", "--input", "1x16x16",
                 "--range", "0,255", "--force"]) == 0          # a model trained on raw pixels
    raw = tabconv_np.load(out)
    assert raw.input_range == (0.0, 255.0)
    u8 = np.random.default_rng(0).integers(0, 256, (2, 1, 16, 16), dtype=np.uint8)
    np.testing.assert_allclose(raw.predict(u8), raw(u8.astype(np.float32)), rtol=1e-5, atol=1e-4)
    assert main(["import", files["cifar", "zip"], "-o", out, "--range", "1,0", "--force"]) == 2
    assert "lo < hi" in capsys.readouterr().err


def test_cli_import_spec_and_errors(lenet, tmp_path, capsys):
    files, spec, x, ref, _, _ = lenet
    out = str(tmp_path / "lenet.h5")
    assert main(["import", files["legacy"], "-o", out, "--spec", spec, "--mean", "0.5", "--std", "0.25"]) == 0
    net = tabconv_np.load(out)
    assert net.preprocess == {"mean": [0.5], "std": [0.25]}
    np.testing.assert_allclose(net(x), ref, atol=1e-4, rtol=0)
    # wrong class count, and no --arch/--spec for a model that is not bundled: exit 2 with advice
    assert main(["import", files["zip"], "-o", out, "--spec", spec, "--classes", "7", "--force"]) == 2
    assert main(["import", files["zip"], "-o", out, "--force"]) == 2
    err = capsys.readouterr().err
    assert "not 7 classes" in err and "--spec" in err
    # an existing output needs --force; the input itself (through a symlink too) never
    before = open(out, "rb").read()
    assert main(["import", files["legacy"], "-o", out, "--spec", spec]) == 2
    assert "exists" in capsys.readouterr().err and open(out, "rb").read() == before
    link = tmp_path / "link.pt"
    link.symlink_to(files["legacy"])
    assert main(["import", files["legacy"], "-o", str(link), "--spec", spec, "--force"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert main(["import", files["legacy"], "-o", str(tmp_path / "no" / "x.h5"), "--spec", spec]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["import", files["legacy"], "-o", out, "--spec", spec, "--force"]) == 0


def test_import_path_never_imports_torch(lenet):
    files, spec, _, _, _, state = lenet
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from tabconv_np.importers import import_model, read_torch\n"
        f"ref = np.load({state!r})\n"
        f"for p in ({files['zip']!r}, {files['legacy']!r}):\n"
        "    sd = read_torch(p)\n"
        "    assert all(np.array_equal(sd[k], ref[k]) for k in ref.files)\n"
        f"    net = import_model(p, spec={spec!r})\n"
        "    assert net.state_dict()['classifier_5.weight'].shape == (10, 84)\n"
        "try:\n"
        "    import torch\n"
        "except ImportError:\n"
        "    print('no torch')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "no torch"


def test_dtypes_views_and_checkpoint_dicts(torch, tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = collections.OrderedDict(
        half=torch.randn(3, 5).half(), bf16=torch.randn(2, 7).bfloat16(), double=torch.randn(4).double(),
        transposed=base.t(), sliced=base[1:3, ::2], long=torch.arange(5), flag=torch.tensor([True, False]),
        scalar=torch.tensor(2.5), empty=torch.zeros(0, 3))
    for fmt in ("zip", "legacy"):
        path = _save(torch, {"epoch": 7, "best": 0.9, "state_dict": sd}, str(tmp_path / f"c_{fmt}.pt"), fmt)
        got = read_torch(path)
        assert list(got) == list(sd)
        for k, v in sd.items():
            want = v.float().numpy() if v.dtype in (torch.float16, torch.bfloat16) else v.numpy()
            assert got[k].dtype == want.dtype and got[k].shape == want.shape, k
            np.testing.assert_array_equal(got[k], want, err_msg=k)


def test_prefixes_and_num_batches_tracked_are_ignored(torch, tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "weights"))
    try:
        from models_torch import build_torch
    finally:
        sys.path.pop(0)
    model = build_torch("lenet", 1, 10).eval()
    sd = collections.OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    sd["module.bn.num_batches_tracked"] = torch.tensor(3)
    path = _save(torch, sd, str(tmp_path / "dp.pt"), "zip")
    net = import_model(path)                     # unique fit: arch guessed
    assert net.meta["arch"] == "lenet"
    x = np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net(x), model(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=0)
    assert list(clean_state({"module.a": 1, "module.b.num_batches_tracked": 2})) == ["a"]


def test_errors_name_the_key_and_shapes(resnet, lenet):
    files, _, _ = resnet
    # the keys tell resnet18-paper (projection shortcut in layer1.0) from resnet18-cifar
    assert import_model(files["torchvision", "zip"]).meta["arch"] == "resnet18-paper"
    with pytest.raises(ShapeError, match="tensor.*that resnet18-cifar does not use.*layer1.0.downsample"):
        import_model(files["torchvision", "zip"], arch="resnet18-cifar")
    with pytest.raises(ShapeError, match="fc.weight.*expected 5 output rows.*found shape \\(10, 512\\)"):
        import_model(files["torchvision", "zip"], arch="resnet18-paper", num_classes=5)
    with pytest.raises(ShapeError, match="lack .* tensor.*layer1.2"):
        import_model(files["torchvision", "zip"], arch="resnet34-paper")
    lfiles, _, _, _, _, _ = lenet
    bad = json.loads(json.dumps(LENET_SPEC))
    bad["layers"][7]["key"] = "classifier.1"
    with pytest.raises(ShapeError, match="no tensor 'classifier.1.weight'"):
        import_model(lfiles["zip"], spec=bad)
    bad = json.loads(json.dumps(LENET_SPEC))
    bad["input"] = [1, 32, 32]
    with pytest.raises(ShapeError, match=r"classifier.0.weight': expected shape \(576,\), found \(400,\)"):
        import_model(lfiles["zip"], spec=bad)
    bad["input"] = [3, 28, 28]
    with pytest.raises(ShapeError, match=r"features.0.weight': expected shape \(6, 3\), found \(6, 1\)"):
        import_model(lfiles["zip"], spec=bad)


# --- unsafe pickles ----------------------------------------------------------------------------------
class _Evil:
    def __init__(self, how, marker):
        self.how, self.marker = how, marker

    def __reduce__(self):
        if self.how == "system":
            return (os.system, (f"touch {self.marker}",))
        return (open, (self.marker, "w"))


def _evil_zip(path, obj):
    """A torch-zip-shaped archive whose data.pkl is ``obj`` pickled (no torch needed)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


def _evil_legacy(path, obj):
    with open(path, "wb") as f:
        for part in (0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(part, f, protocol=2)
        pickle.dump(obj, f, protocol=2)
        pickle.dump([], f, protocol=2)
    return path


@pytest.mark.parametrize("how", ["system", "open"])
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_code_in_pickles_is_refused_without_running(tmp_path, how, fmt):
    marker = tmp_path / "pwned"
    obj = {"conv.weight": _Evil(how, str(marker))}
    path = (_evil_zip if fmt == "zip" else _evil_legacy)(str(tmp_path / "evil.pt"), obj)
    with pytest.raises(UnsafePickleError, match="posix.system|builtins.open|io.open") as e:
        import_model(path, arch="lenet")
    assert "state_dict()" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_code_in_real_torch_files_is_refused(torch, tmp_path, fmt):
    marker = tmp_path / "pwned"
    sd = dict(_lenet_like(torch).state_dict())
    sd["extra"] = _Evil("system", str(marker))
    path = _save(torch, sd, str(tmp_path / "evil.pt"), fmt)
    with pytest.raises(UnsafePickleError, match="posix.system"):
        read_torch(path)
    assert not marker.exists()


def test_load_from_bytes_is_refused(tmp_path):
    # torch.storage._load_from_bytes would unpickle again (with the full unpickler)
    blob = b"\x80\x02ctorch.storage\n_load_from_bytes\nq\x00C\x04abcdq\x01\x85q\x02Rq\x03."
    path = str(tmp_path / "lfb.pt")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", blob)
    with pytest.raises(UnsafePickleError, match="torch.storage._load_from_bytes"):
        read_torch(path)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("kind", ["nn.Sequential", "user class"])
def test_whole_pickled_model_is_refused_with_hint(torch, tmp_path, fmt, kind):
    if kind == "nn.Sequential":
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    else:
        sys.path.insert(0, os.path.join(ROOT, "weights"))
        try:
            from models_torch import build_torch
        finally:
            sys.path.pop(0)
        model = build_torch("lenet", 1, 10)
    path = _save(torch, model, str(tmp_path / "model.pt"), fmt)
    with pytest.raises(UnsafePickleError, match=r"whole model.*torch.save\(model.state_dict\(\)"):
        import_model(path)


def test_not_a_state_dict(tmp_path):
    path = _evil_zip(str(tmp_path / "list.pt"), [1, 2, 3])
    with pytest.raises(WeightFileError, match="not a state dict"):
        read_torch(path)


# --- corrupt files -------------------------------------------------------------------------------------
def _mutate(data, blob):
    """A truncated or bit-flipped copy of ``blob``, damage biased towards headers and the end."""
    n = len(blob)
    pos = st.one_of(st.integers(0, min(n, 2048) - 1), st.integers(max(0, n - 2048), n - 1),
                    st.integers(0, n - 1))
    return mutate(data, blob, pos)


@pytest.fixture(scope="module")
def small_files(torch, tmp_path_factory):
    sys.path.insert(0, os.path.join(ROOT, "weights"))
    try:
        from models_torch import build_torch
    finally:
        sys.path.pop(0)
    torch.manual_seed(5)
    model = build_torch("lenet", 1, 10)
    d = tmp_path_factory.mktemp("fuzz")
    out = {}
    for fmt in ("zip", "legacy"):
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf, _use_new_zipfile_serialization=(fmt == "zip"))
        out[fmt] = buf.getvalue()
    return out, d


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_damaged_torch_files_raise_project_errors(small_files, fmt):
    blobs, d = small_files
    path = str(d / f"damaged_{fmt}.pt")

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def run(data):
        check_damaged(path, _mutate(data, blobs[fmt]), arch="lenet")

    run()
