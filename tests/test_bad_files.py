"""Hostile and damaged files, one finding each: refused with the project's error, naming what is wrong.

HDF5 files that would make HDF5 read other files (external storage, external
and soft links, virtual datasets) or return unwritten fill values, for
``tabconv_np.load`` and the Keras importer; FIFOs; zips with path components
or bomb-sized members; ONNX external data; semantic config errors.
"""
import gzip
import json
import os
import warnings
import zipfile

import h5py
import numpy as np
import pytest

import tabconv_np
from tabconv_np import validate
from tabconv_np.errors import ConfigError, DataError, ShapeError, WeightFileError
from tabconv_np.importers import import_model
from tabconv_np.models import build
from helpers import randomize
from test_import_keras import _keras2_config, _layers, _write_keras2, _write_keras3_weights

HOSTILE = ("external", "external-link", "soft-link", "virtual", "unwritten", "unwritten-chunk", "plugin")


def make_hostile(path, key, kind, tmp_path):
    """Replace dataset ``key`` of the HDF5 file ``path`` by a ``kind`` of the same shape and values."""
    with h5py.File(path, "a") as f:
        v = f[key][()]
        del f[key]
        other = str(tmp_path / "other.h5")
        if kind == "external":
            secret = tmp_path / "secret.bin"
            secret.write_bytes(v.tobytes())
            f.create_dataset(key, v.shape, v.dtype, external=[(str(secret), 0, v.nbytes)])
        elif kind in ("external-link", "virtual"):
            with h5py.File(other, "w") as g:
                g["x"] = v
            if kind == "virtual":
                layout = h5py.VirtualLayout(v.shape, v.dtype)
                layout[...] = h5py.VirtualSource(other, "x", v.shape)
                f.create_virtual_dataset(key, layout)
            else:
                f[key] = h5py.ExternalLink(other, "x")
        elif kind == "soft-link":
            f["elsewhere"] = v
            f[key] = h5py.SoftLink("/elsewhere")
        elif kind == "unwritten":
            f.create_dataset(key, v.shape, v.dtype)
        elif kind == "plugin":              # blosc's filter number: reading would look for a plugin
            f.create_dataset(key, data=v, chunks=v.shape, compression=32001, allow_unknown_filter=True)
        else:                               # a chunked dataset with one chunk never written
            ds = f.create_dataset(key, v.shape, v.dtype, chunks=(1,) + v.shape[1:])
            ds[1:] = v[1:]


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    net = randomize(build("lenet", 1, 10))
    path = tmp_path_factory.mktemp("net") / "net.h5"
    tabconv_np.save(net, path)
    return net, path.read_bytes()


@pytest.mark.parametrize("kind", HOSTILE)
def test_load_refuses_files_reaching_outside_or_unwritten(lenet, tmp_path, kind):
    path = tmp_path / "net.h5"
    path.write_bytes(lenet[1])
    make_hostile(path, "params/conv1.weight", kind, tmp_path)
    with pytest.raises(WeightFileError, match=r"net\.h5: .*(params/conv1\.weight|elsewhere)"):
        tabconv_np.load(path)


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("layout", ["keras2", "keras3-weights", "keras3-zip"])
def test_keras_import_refuses_files_reaching_outside(tmp_path, kind, layout):
    layers = _layers()
    h5 = tmp_path / "m.h5"
    if layout == "keras2":
        _write_keras2(h5, layers)
        key = "model_weights/conv2d/conv2d/kernel:0"
    else:
        _write_keras3_weights(str(h5), layers)
        key = "layers/conv2d/vars/0"
    make_hostile(h5, key, kind, tmp_path)
    source = h5
    if layout == "keras3-zip":
        source = tmp_path / "m.keras"
        with zipfile.ZipFile(source, "w") as zf:
            zf.writestr("config.json", json.dumps(_keras2_config(layers)))
            zf.writestr("model.weights.h5", h5.read_bytes())
    with pytest.raises(WeightFileError, match="refused|other files|never|soft link|plugin"):
        import_model(source, spec={"input": [3, 10, 10], "layers": [{"type": "flatten"}]})


def test_non_regular_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for call in (tabconv_np.load, import_model):  # a blocking open would hang here
        with pytest.raises(WeightFileError, match="FIFO, not a regular file"):
            call(fifo)
        with pytest.raises(WeightFileError, match="directory, not a regular file"):
            call(tmp_path)
    from tabconv_np.data import read_idx
    with pytest.raises(DataError, match="FIFO, not a regular file"):
        read_idx(fifo)
    from tabconv_np.importers.spec import load_spec
    with pytest.raises(ConfigError, match="FIFO, not a regular file"):
        load_spec(fifo)


def test_old_files_without_checksums_load_with_one_warning():
    here = os.path.join(os.path.dirname(__file__), "data", "lenet_tables_v0.h5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tabconv_np.load(here)
    assert [str(w.message).count("\n") for w in caught] == [0]
    assert "without checksums" in str(caught[0].message)


def test_checksum_failure_names_the_dataset(lenet, tmp_path):
    net, blob = lenet
    path = tmp_path / "net.h5"
    path.write_bytes(blob)
    with h5py.File(path, "r") as f:
        info = f["params/fc1.weight"].id.get_chunk_info(0)
    data = bytearray(blob)
    data[info.byte_offset + 10] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match=r"dataset /params/fc1\.weight cannot be read.*"):
        tabconv_np.load(path)


@pytest.mark.parametrize("name", ["../evil", "/abs/evil", "a/../../evil", "c:/evil", "a\\..\\evil"])
def test_zip_members_with_path_components_are_refused(tmp_path, name):
    for what in ("torch", "keras"):
        path = tmp_path / f"{what}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl" if what == "torch" else "config.json", b"x")
            if what == "keras":
                zf.writestr("model.weights.h5", b"x")
            zf.writestr(name, b"x")
        with pytest.raises(WeightFileError, match="path leaving the archive"):
            import_model(path)


def test_zip_bomb_member_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"x")
        zf.writestr("archive/data/0", bytes(64 << 20))       # 64 MiB of zeros in 64 KiB
    monkeypatch.setattr(validate, "MAX_BYTES", 1 << 20)
    with pytest.raises(WeightFileError, match=r"archive/data/0' declares 67,108,864 bytes from"):
        import_model(path)


def test_idx_gzip_bomb_decompresses_no_more_than_its_header_declares(tmp_path, monkeypatch):
    from tabconv_np.data import read_idx
    path = tmp_path / "bomb-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0\0\x08\x01" + (10).to_bytes(4, "big") + bytes(256 << 20)))
    with pytest.raises(DataError, match=r"holds more than the 18 bytes its dims \(10,\) declare"):
        read_idx(path)
    path.write_bytes(gzip.compress(b"\0\0\x08\x01" + (1 << 30).to_bytes(4, "big") + bytes(4 << 20)))
    monkeypatch.setattr(validate, "MAX_BYTES", 1 << 20)
    with pytest.raises(DataError, match="gzip bytes declare more than 1,048,576"):
        read_idx(path)


def _onnx_model(where):
    """Flatten -> Gemm(W, B) on a 1x2x2 input, W an initializer or a Constant node's value;
    ``where`` (initializer, constant, subgraph or None) holds a tensor with external data."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "W")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "B")
    bad = numpy_helper.from_array(np.zeros((3, 4), np.float32), "W")
    bad.ClearField("raw_data")
    bad.data_location = TensorProto.EXTERNAL
    entry = bad.external_data.add()
    entry.key, entry.value = "location", "secret.bin"
    nodes = [helper.make_node("Flatten", ["X"], ["F"], name="flat"),
             helper.make_node("Gemm", ["F", "W", "B"], ["Y"], name="fc", transB=1)]
    inits = [bad if where == "initializer" else w, b]
    if where == "constant":
        inits = [b]
        nodes.insert(0, helper.make_node("Constant", [], ["W"], name="const", value=bad))
    if where == "subgraph":
        sub = helper.make_graph([helper.make_node("Constant", [], ["Z"], value=bad)], "sub", [],
                                [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [3, 4])])
        nodes.insert(0, helper.make_node("If", ["X"], ["unused"], name="branch",
                                         then_branch=sub, else_branch=sub))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                         [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph).SerializeToString()


@pytest.mark.parametrize("where", ["initializer", "constant", "subgraph"])
def test_onnx_external_data_refused_anywhere(tmp_path, monkeypatch, where):
    path = tmp_path / "m.onnx"
    path.write_bytes(_onnx_model(None))
    assert import_model(path).out_shape == (3,)
    (tmp_path / "secret.bin").write_bytes(np.arange(12, dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)                       # where onnx would look for the data
    path.write_bytes(_onnx_model(where))
    with pytest.raises(WeightFileError, match="keeps its data in an external file.*save_as_external"):
        import_model(path)


# --- configs: semantic validation before allocation ------------------------------------------------
def _conv(**kw):
    return {"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, **kw}


def _lin(n=4):
    return {"type": "Linear", "in_features": n, "out_features": n}


def _nested(depth):
    cfg = {"type": "ReLU"}
    for _ in range(depth):
        cfg = {"type": "Sequential", "children": [["s", cfg]]}
    return cfg


BAD_CONFIGS = [
    ({"type": "BatchNorm2d", "num_features": 4, "eps": -1e-5}, "eps must be finite and > 0"),
    ({"type": "BatchNorm2d", "num_features": 4, "eps": float("nan")}, "eps must be finite"),
    ({"type": "BatchNorm2d", "num_features": 4e8}, "num_features must be an int"),
    ({"type": "BatchNorm2d", "num_features": 400_000_000}, "BatchNorm2d: 1,600,000,000 parameters exceed"),
    ({"type": "Linear", "in_features": 100_000, "out_features": 100_000}, "Linear: .* exceed the limit"),
    (_conv(out_channels=1 << 30), "Conv2d: .* exceed the limit"),
    ({"type": "TableLinear", "in_features": 1 << 20, "out_features": 1 << 12, "n_codebooks": 1 << 16},
     "TableLinear: .* exceed the limit"),
    (_conv(kernel_size=2.5), "kernel_size must be an int"),
    (_conv(stride=0), "stride must be >= 1"),
    (_conv(dilation=[1, 0]), r"dilation\[1\] must be >= 1"),
    (_conv(groups=0), "groups must be >= 1"),
    ({"type": "MaxPool2d", "kernel_size": 0}, "kernel_size must be >= 1"),
    ({"type": "AvgPool2d", "kernel_size": 2, "stride": 0}, "stride must be >= 1"),
    ({"type": "Clip", "min": 0, "max": float("nan")}, "Clip: max must be finite"),
    ({"type": "Clip", "min": float("-inf"), "max": 6}, "Clip: min must be finite"),
    ({"type": "Clip", "min": 6, "max": 0}, "below min"),
    ({"type": "Dropout", "p": "x"}, "Dropout: p must be a number"),
    ({"type": "TableLinear", "in_features": 8, "out_features": 2, "n_prototypes": 70_000},
     "n_prototypes must be <= 16384"),
    ({"type": "BasicBlock", "in_planes": 4, "planes": 4, "stride": 1.5}, "stride must be an int"),
    ({"type": "BasicBlock", "in_planes": 4, "planes": 4, "children": [["extra", _lin()]]},
     "child 'extra' is repeated or not one of"),
    ({"type": "BasicBlock", "in_planes": 4, "planes": 4}, None),
    ({"type": "BasicBlock", "planes": 4}, "layer type BasicBlock: bad or missing config entry"),
    ({"type": "Sequential", "children": [["a", _lin()], ["a", _lin()]]}, "two children are named 'a'"),
    ({"type": "Sequential", "children": [["a.b", _lin()], ["a", {"type": "Sequential",
                                                                  "children": [["b", _lin()]]}]]},
     r"parameter name 'a\.b\.weight' is given by two layers, 'a\.b' \(Linear\) and 'a\.b' \(Linear\)"),
    ({"type": "Sequential", "children": [["a", _lin()], ["g", {"type": "Graph", "nodes": [
        ["a", ["input"], _lin()]]}]]}, None),
    ({"type": "Sequential", "children": "no"}, "'children' must be a list"),
    (_nested(31), None),
    (_nested(40), "nested more than 32 deep"),
]


@pytest.mark.parametrize("cfg, message", BAD_CONFIGS)
def test_semantic_config_errors_before_allocation(cfg, message):
    from tabconv_np.registry import from_config
    if message is None:
        from_config(cfg)
        return
    with pytest.raises(ConfigError, match=message):
        from_config(cfg)


def test_total_parameter_limit_is_overridable(monkeypatch):
    from tabconv_np.registry import from_config
    cfg = {"type": "Sequential", "children": [[str(i), _lin(100)] for i in range(5)]}
    from_config(cfg)
    monkeypatch.setattr(validate, "MAX_PARAMETERS", 30_000)
    with pytest.raises(ConfigError, match="up to layer Linear: 30,300 parameters exceed the limit of 30,000"):
        from_config(cfg)


@pytest.fixture(scope="module")
def bn_file(tmp_path_factory):
    from tabconv_np.blocks import Sequential
    from tabconv_np.layers import BatchNorm2d, Conv2d, Flatten
    from tabconv_np.network import Network
    net = randomize(Network(Sequential([("c", Conv2d(1, 2, 3)), ("bn", BatchNorm2d(2)),
                                        ("f", Flatten())]), (1, 4, 4)))
    net.preprocess = {"mean": [0.5], "std": [0.25]}
    path = tmp_path_factory.mktemp("bn") / "bn.h5"
    tabconv_np.save(net, path)
    return path.read_bytes()


@pytest.mark.parametrize("old, new, message", [
    ('"input_shape": [1, 4, 4]', '"input_shape": [1, Infinity, 4]', "'input_shape' must be a list of 3 positive ints"),
    ('"input_shape": [1, 4, 4]', '"input_shape": [1, -4, 4]', "'input_shape' must be"),
    ('"std": [0.25]', '"std": [0.0]', "'preprocess' must hold"),
    ('"std": [0.25]', '"std": [NaN]', "'preprocess' must hold"),
    ('"std": [0.25]', '"std": [0.25, 1, 2]', "'preprocess' must hold"),
    ('"std": [0.25]', '"std": [0.25], "range": [1, 0]', "range must be two finite numbers lo < hi"),
    ('"eps": 1e-05', '"eps": -1e-05', "eps must be finite and > 0"),
    ('"body": ', '"body": ' + '{"type": "Sequential", "children": [["s", ' * 3000, "bad 'config'"),
])
def test_config_edits_in_a_file_are_weight_file_errors(bn_file, tmp_path, old, new, message):
    path = tmp_path / "bn.h5"
    path.write_bytes(bn_file)
    with h5py.File(path, "a") as f:
        raw = f.attrs["config"].decode()
        assert old in raw
        f.attrs["config"] = np.bytes_(raw.replace(old, new).encode())
    with pytest.raises(WeightFileError, match=message):
        tabconv_np.load(path)


def test_negative_running_variance_is_refused(bn_file, tmp_path):
    path = tmp_path / "bn.h5"
    path.write_bytes(bn_file)
    with h5py.File(path, "a") as f:
        v = f["params/bn.running_var"][()]
        f["params/bn.running_var"][...] = -v
    with pytest.raises(WeightFileError, match=r"/params/bn\.running_var has negative values"):
        tabconv_np.load(path)


# --- table layers propagate NaN and Inf like the exact layers -------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_table_layers_propagate_non_finite_inputs(bad):
    from tabconv_np.layers import Conv2d, Linear
    from tabconv_np.tables import TableConv2d, TableLinear
    rng = np.random.default_rng(0)
    conv = randomize_layer(Conv2d(2, 3, 3, padding=1), rng)
    table = TableConv2d.from_conv(conv, rng.normal(size=(3, 16, 6)).astype(np.float32))
    x = rng.normal(size=(2, 2, 6, 6)).astype(np.float32)
    x[0, 1, 2, 3] = bad
    exact, got = conv(x), table(x)
    assert (~np.isfinite(got) == ~np.isfinite(exact)).all()
    assert np.isnan(got[~np.isfinite(exact)]).all() and np.isfinite(got[1]).all()
    lin = randomize_layer(Linear(8, 5), rng)
    tl = TableLinear.from_linear(lin, rng.normal(size=(4, 16, 2)).astype(np.float32))
    v = rng.normal(size=(3, 8)).astype(np.float32)
    v[1, 4] = bad
    assert np.isnan(tl(v)[1]).all() and np.isfinite(tl(v)[[0, 2]]).all()
    with pytest.raises(ShapeError, match="NaN or Inf"):
        tl.encode(v)
    with pytest.raises(ShapeError, match="prototypes contain NaN"):
        TableLinear.from_linear(lin, np.full((4, 16, 2), np.nan, np.float32))


def randomize_layer(layer, rng):
    for v in layer.params.values():
        v[...] = rng.normal(size=v.shape)
    return layer


def test_a_changed_config_byte_is_a_checksum_error(bn_file, tmp_path):
    # the config sits in the checksummed object header (it used to sit in the global heap,
    # which has no checksum: this edit loaded with eps 1e-4, other edits hung HDF5)
    at = bn_file.index(b'"eps": 1e-05') + len(b'"eps": 1e-0')
    path = tmp_path / "bn.h5"
    path.write_bytes(bn_file[:at] + b"4" + bn_file[at + 1:])
    with pytest.raises(WeightFileError, match="checksum"):
        tabconv_np.load(path)


def test_stride_zero_torch_tensors_cannot_blow_up(tmp_path):
    torch = pytest.importorskip("torch")
    from tabconv_np.importers.torch_pickle import read_torch
    path = tmp_path / "expanded.pt"
    torch.save({"w": torch.zeros(1).expand(6000, 6000)}, path)   # 4 bytes stored, 144 MB declared
    assert path.stat().st_size < 2000
    with pytest.raises(WeightFileError, match=r"a tensor of size \(6000, 6000\)"):
        read_torch(path)
    torch.save({"w": torch.zeros(1).expand(30, 30)}, path)     # small expansions are fine
    assert read_torch(path)["w"].shape == (30, 30)


@pytest.mark.parametrize("stride, kernel, dilation", [((10_000, 10_000), 1, 1), ((7, 300), 3, 2)])
def test_direct_conv_memory_does_not_grow_with_the_stride(stride, kernel, dilation):
    import tracemalloc
    from tabconv_np.functional import conv2d
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 30, 30)).astype(np.float32)
    w = rng.normal(size=(4, 3, kernel, kernel)).astype(np.float32)
    ref = conv2d(x, w, None, stride, 1, dilation, method="naive")
    conv2d(x[:1], w, None, 1, 1, dilation, method="direct")        # compile or load the kernel
    tracemalloc.start()
    got = conv2d(x, w, None, stride, 1, dilation, method="direct")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert peak < 8 * x.nbytes                  # was 10_000**2 * 4 bytes per channel


def test_compression_bombs_refused_by_the_default_ratio(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"x")
        zf.writestr("archive/data/0", bytes(8 << 20))        # 8 MiB from 8 KiB: ratio 1000
    with pytest.raises(WeightFileError, match="declares 8,388,608 bytes from"):
        import_model(path)
    from tabconv_np.data import load_mnist_subset
    (tmp_path / "mnist_5k.csv.gz").write_bytes(gzip.compress(bytes(50 << 20)))
    with pytest.raises(DataError, match="gzip bytes decompress to more than"):
        load_mnist_subset(data_dir=str(tmp_path))


@pytest.mark.parametrize("command", [["ops"], ["eval", "--dataset", "sample", "--limit", "8"],
                                     ["convert", "-o", "out.h5", "--calib", "8"],
                                     ["import", "-o", "out.h5"]])
@pytest.mark.parametrize("hostile", ["fifo", "external-link"])
def test_cli_on_hostile_files_says_one_line_and_exits_2(lenet, tmp_path, monkeypatch, capsys,
                                                        command, hostile):
    from tabconv_np.cli import main
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "net.h5"
    if hostile == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(lenet[1])
        make_hostile(path, "params/conv1.weight", hostile, tmp_path)
    assert main([command[0], str(path)] + command[1:]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "net.h5" in err and "Traceback" not in err, err
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("shape", [(1, float("inf"), 2), (1, 2.5, 2), (1, 0, 2)])
def test_import_input_shape_must_be_positive_ints(tmp_path, shape):
    path = tmp_path / "m.onnx"
    path.write_bytes(_onnx_model(None))
    with pytest.raises(ConfigError, match="input shape must"):
        import_model(path, input_shape=shape)
