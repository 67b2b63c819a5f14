"""HDF5 save/load: bit-exact round trips and every bad-file case."""
import json

import h5py
import numpy as np
import pytest

import tabconv_np
from tabconv_np.errors import WeightFileError
from tabconv_np.models import build
from helpers import randomize


@pytest.fixture
def saved(tmp_path):
    net = randomize(build("resnet18-paper", 1, 10))
    net.preprocess = {"mean": [0.28], "std": [0.35]}
    path = tmp_path / "net.h5"
    tabconv_np.save(net, path)
    return net, path


def test_round_trip_is_bit_exact(saved):
    net, path = saved
    back = tabconv_np.load(path)
    assert back.config() == net.config()
    for k, v in net.state_dict().items():
        assert np.array_equal(back.state_dict()[k], v), k
    x = np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype(np.float32)
    assert np.array_equal(back(x), net(x))


def test_float16_storage(tmp_path, saved):
    net, _ = saved
    tabconv_np.save(net, tmp_path / "h.h5", dtype="float16")
    with h5py.File(tmp_path / "h.h5") as f:
        assert f["params/conv1.weight"].dtype == np.float16
    back = tabconv_np.load(tmp_path / "h.h5")
    assert back.state_dict()["conv1.weight"].dtype == np.float32


def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


@pytest.mark.parametrize("edit, message", [
    (lambda f: f["params"].__delitem__("fc.bias"), "missing dataset.*fc.bias"),
    (lambda f: f["params"].create_dataset("fc.extra", data=np.zeros(3)), "unexpected dataset.*fc.extra"),
    (lambda f: (f["params"].__delitem__("fc.bias"), f["params"].create_dataset("fc.bias", data=np.zeros(9))),
     r"fc.bias has shape \(9,\), expected \(10,\)"),
    (lambda f: (f["params"].__delitem__("fc.bias"), f["params"].create_dataset("fc.bias", data=np.zeros(10, "i4"))),
     "fc.bias has dtype int32"),
    (lambda f: f["params/conv1.weight"].__setitem__((0, 0, 0, 0), np.nan), "conv1.weight contains NaN"),
    (lambda f: f["params/fc.weight"].__setitem__((0, 0), np.inf), "fc.weight contains NaN or Inf"),
    (lambda f: f.attrs.__setitem__("config", json.dumps({"body": {"type": "Transformer"}, "input_shape": [1, 28, 28]})),
     "unknown layer type 'Transformer'"),
    (lambda f: f.attrs.__setitem__("config", "{not json"), "bad 'config'"),
    (lambda f: f.attrs.__delitem__("tabconv_np_format"), "not a tabconv_np weight file"),
])
def test_bad_files_name_what_is_wrong(saved, edit, message):
    _, path = saved
    _edit(path, edit)
    with pytest.raises(WeightFileError, match=message):
        tabconv_np.load(path)


def test_not_hdf5_and_truncated(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "text.h5"
    bad.write_text("hello")
    with pytest.raises(WeightFileError, match="not a readable HDF5"):
        tabconv_np.load(bad)
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="cut.h5"):
        tabconv_np.load(cut)
    with pytest.raises(WeightFileError, match="no such file"):
        tabconv_np.load(tmp_path / "absent.h5")


def test_save_refuses_to_replace_and_is_atomic(saved, monkeypatch):
    net, path = saved
    before = open(path, "rb").read()
    with pytest.raises(tabconv_np.OutputError, match="exists"):
        tabconv_np.save(net, path)
    with pytest.raises(tabconv_np.OutputError, match="does not exist"):
        tabconv_np.save(net, path.parent / "missing" / "x.h5")
    # an interrupted save leaves the previous file whole and no temporary behind
    monkeypatch.setattr(net, "state_dict", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        tabconv_np.save(net, path, overwrite=True)
    assert open(path, "rb").read() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["net.h5"]


def test_saved_datasets_carry_checksums_and_damage_is_an_error(saved):
    net, path = saved
    with h5py.File(path) as f:
        ds = f["params/conv1.weight"]
        assert ds.fletcher32
        offset = ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset
    raw = bytearray(open(path, "rb").read())
    raw[offset + 5] ^= 0x10                         # one bit in the data region
    open(path, "wb").write(bytes(raw))
    with pytest.raises(WeightFileError, match="conv1.weight"):
        tabconv_np.load(path)
