"""Fuzzing the loaders with damaged and hostile files (Hypothesis, bounded for CI).

Every trial runs in a child process (``hostile_worker.py``) with a memory cap,
so a crash, a hang or an allocation before validation is a failure here, not
the end of the test run.  The property asserted:

* a file with checksums (``tabconv_np.save``'s Fletcher-32 and checksummed
  metadata; a torch zip's CRC-32), truncated or with bits flipped in its
  metadata or its data: the project's error, or exactly the original
  network's outputs (arrays);
* a structured edit of a saved config, and damage to formats that carry no
  checksum (ONNX, Keras HDF5 files, pickles): the project's error, or a
  network that runs and survives save and load unchanged -- such formats
  cannot tell a changed weight from an intended one;
* never a raw exception, a crash, a hang or a blow-up of memory.

The default profile runs each test's examples in a few seconds;
``HYPOTHESIS_PROFILE=thorough`` (tests/conftest.py) runs ten times more.
"""
import json
import os
import select
import subprocess
import sys

import h5py
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tabconv_np
from tabconv_np.blocks import Sequential
from tabconv_np.layers import BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU
from tabconv_np.network import Network
from tabconv_np.tables import TableLinear
from helpers import mutate, randomize

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "hostile_worker.py")
TIMEOUT = 60


class Worker:
    """The child process answering load requests; restarted after a crash or a hang."""

    def __init__(self):
        self.proc = None

    def ask(self, **req):
        if self.proc is None or self.proc.poll() is not None:
            root = os.path.dirname(os.path.dirname(tabconv_np.__file__))   # this checkout's package
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
            self.proc = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True, cwd=HERE, env=env)
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            return {"outcome": "crash or hang" if ready else "hang", "type": "", "message": ""}
        return json.loads(line)

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def _tiny():
    """Conv, BN, ReLU, pool, linear and PQ table layers on 1x4x4 images, random weights."""
    body = Sequential([("conv", Conv2d(1, 2, 3, padding=1)), ("bn", BatchNorm2d(2)), ("relu", ReLU()),
                       ("pool", MaxPool2d(2)), ("flat", Flatten()), ("fc", Linear(8, 8)),
                       ("table", TableLinear(8, 4, n_codebooks=2, n_prototypes=4))])
    return randomize(Network(body, (1, 4, 4), preprocess={"mean": [0.5], "std": [0.25]}))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, worker):
    """The tiny network's file, its bytes, the byte positions of its data, the reference answer."""
    path = tmp_path_factory.mktemp("hostile") / "tiny.h5"
    tabconv_np.save(_tiny(), path)
    data = []
    with h5py.File(path, "r") as f:
        for key, ds in f["params"].items():
            if ds.chunks is not None:
                info = ds.id.get_chunk_info(0)
                data += range(info.byte_offset, info.byte_offset + info.size)
    ref = worker.ask(kind="load", path=str(path))
    assert ref["outcome"] == "ok" and ref["resaved"], ref
    return path, path.read_bytes(), sorted(set(data)), ref


def check(answer, ref=None):
    """The project's error; else with ``ref`` the same outputs, without it a network that
    runs and survives a save and load."""
    assert answer["outcome"] in ("ok", "error"), answer
    if answer["outcome"] == "ok":
        if ref is not None:
            assert answer["digest"] == ref["digest"], "a damaged file loaded as another network"
        else:
            assert answer["resaved"], answer


@given(data=st.data())
def test_damaged_saved_file_is_an_error_or_the_same_network(saved, worker, tmp_path_factory, data):
    path, blob, in_data, ref = saved
    region = data.draw(st.sampled_from(["metadata", "data", "anywhere"]), label="region")
    pos = {"metadata": st.integers(0, len(blob) - 1).filter(lambda p: p not in in_data),
           "data": st.sampled_from(in_data), "anywhere": st.integers(0, len(blob) - 1)}[region]
    bad = tmp_path_factory.mktemp("damaged") / "tiny.h5"
    bad.write_bytes(mutate(data, blob, pos))
    check(worker.ask(kind="load", path=str(bad)), ref)


def _leaves(cfg, path=()):
    """Every ``(path, value)`` inside a config, containers included."""
    yield path, cfg
    items = cfg.items() if isinstance(cfg, dict) else enumerate(cfg) if isinstance(cfg, list) else ()
    for k, v in items:
        yield from _leaves(v, path + (k,))


HOSTILE_VALUES = st.one_of(
    st.sampled_from([0, -1, 1, 2, 3, 7, 2 ** 31, 2 ** 63, 10 ** 30, 0.5, 2.5, -0.0, 1e308,
                     float("nan"), float("inf"), float("-inf"), "", "x", "Conv2d", "Graph", "input",
                     None, True, False, [], {}, [0], [1, 1], [0, 0, 0, 0], [-1, 2], {"type": "ReLU"}]),
    st.integers(), st.floats(), st.text(max_size=8),
    st.integers(1, 400).map(lambda n: json.loads("[" * n + "]" * n)))


@given(data=st.data())
def test_structured_config_edits(saved, worker, tmp_path_factory, data):
    path, blob, _, _ = saved
    bad = tmp_path_factory.mktemp("edited") / "tiny.h5"
    bad.write_bytes(blob)
    with h5py.File(bad, "a") as f:
        cfg = json.loads(f.attrs["config"])
        where, _ = data.draw(st.sampled_from(list(_leaves(cfg))[1:]), label="path")
        new = data.draw(HOSTILE_VALUES, label="value")
        target = cfg
        for k in where[:-1]:
            target = target[k]
        if data.draw(st.booleans(), label="delete") and isinstance(target, dict):
            del target[where[-1]]
        else:
            target[where[-1]] = new
        f.attrs["config"] = json.dumps(cfg).encode()
    check(worker.ask(kind="load", path=str(bad)))


def _opcodes():
    """Pickle programs: random opcode soups and deep nesting of lists, tuples, dicts, keys."""
    ops = [b"]", b")", b"}", b"(", b"a", b"e", b"s", b"u", b"t", b"\x85", b"\x86", b"\x87", b"K\x01",
           b"N", b"\x88", b"0", b"2", b"b", b"R", b"c__builtin__\nlist\n", b"ctorch\nFloatStorage\n",
           b"q\x00", b"h\x00", b"X\x01\x00\x00\x00a"]
    soup = st.lists(st.sampled_from(ops), max_size=200).map(b"".join)
    deep = st.tuples(st.sampled_from([b"]", b"(", b"}(", b")"]), st.integers(1, 200_000)).map(
        lambda t: t[0] * t[1] + b"N" + b"\x85" * t[1])
    return st.tuples(st.sampled_from([b"\x80\x02", b"\x80\x04", b""]), st.one_of(soup, deep)).map(
        lambda t: t[0] + t[1] + b".")


@settings(max_examples=30)
@given(program=_opcodes())
def test_hostile_pickles(worker, tmp_path_factory, program):
    path = tmp_path_factory.mktemp("pickle") / "batch"
    path.write_bytes(program)
    check(worker.ask(kind="pickle", path=str(path)))
    check(worker.ask(kind="torch", path=str(path)))


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory, worker):
    """A torch zip (CRC-32 on every member: compared exactly) and a legacy pickle (no checksum)."""
    torch = pytest.importorskip("torch")
    state = {"w": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4), "b": torch.ones(3)}
    out = []
    for zipped in (True, False):
        path = tmp_path_factory.mktemp("torch") / "state.pt"
        torch.save(state, path, _use_new_zipfile_serialization=zipped)
        ref = worker.ask(kind="torch", path=str(path))
        assert ref["outcome"] == "ok", ref
        out.append((path.read_bytes(), ref if zipped else None))
    return out


@given(data=st.data())
def test_damaged_torch_files(torch_files, worker, tmp_path_factory, data):
    blob, ref = data.draw(st.sampled_from(torch_files), label="format")
    bad = tmp_path_factory.mktemp("torch") / "state.pt"
    bad.write_bytes(mutate(data, blob, st.integers(0, len(blob) - 1)))
    check(worker.ask(kind="torch", path=str(bad)), ref)


def _int_edits(pkl, data):
    """``pkl`` (protocol 2) with some integer operands -- storage sizes, offsets, tensor sizes
    and strides in a torch pickle -- replaced by hostile values (0, -1, huge)."""
    import pickletools
    ints = [(pos, pos + 1 + op.arg.n) for op, _, pos in pickletools.genops(pkl)
            if op.name in ("BININT1", "BININT2", "BININT")]
    chosen = data.draw(st.lists(st.sampled_from(ints), min_size=1, max_size=3, unique=True),
                       label="operands")
    for pos, end in sorted(chosen, reverse=True):
        value = data.draw(st.sampled_from([0, 1, -1, 2, 7, 2 ** 24 + 1, 2 ** 31 - 1, 2 ** 31, 2 ** 40,
                                           2 ** 62, 2 ** 63 - 1, -(2 ** 63)]), label="value")
        enc = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        pkl = pkl[:pos] + b"\x8a" + bytes([len(enc)]) + enc + pkl[end:]     # LONG1
    return pkl


@given(data=st.data())
def test_torch_pickles_with_hostile_sizes_and_strides(torch_files, worker, tmp_path_factory, data):
    import io
    import zipfile
    src = zipfile.ZipFile(io.BytesIO(torch_files[0][0]))
    bad = tmp_path_factory.mktemp("torch") / "sizes.pt"
    with zipfile.ZipFile(bad, "w") as out:
        for name in src.namelist():
            blob = src.read(name)
            out.writestr(name, _int_edits(blob, data) if name.endswith("data.pkl") else blob)
    check(worker.ask(kind="torch", path=str(bad)))


@pytest.fixture(scope="module")
def other_formats(tmp_path_factory):
    """Keras 2 .h5 and Keras 3 .keras models and an ONNX model (when onnx is installed):
    ``(path, import kwargs)``."""
    from test_bad_files import _onnx_model
    from test_import_keras import _layers, _write_keras2, _write_keras3_zip
    folder = tmp_path_factory.mktemp("formats")
    out = [(_write_keras2(folder / "m.h5", _layers()), {}),
           (_write_keras3_zip(folder / "m.keras", _layers()), {})]
    try:
        (folder / "m.onnx").write_bytes(_onnx_model(None))
        out.append((str(folder / "m.onnx"), {}))
    except pytest.skip.Exception:
        pass
    return out


@given(data=st.data())
def test_damaged_onnx_and_keras_files(other_formats, worker, tmp_path_factory, data):
    path, kw = data.draw(st.sampled_from(other_formats), label="format")
    with open(path, "rb") as f:
        blob = f.read()
    bad = tmp_path_factory.mktemp("other") / os.path.basename(path)
    bad.write_bytes(mutate(data, blob, st.integers(0, len(blob) - 1)))
    check(worker.ask(kind="import", path=str(bad), kw=kw))
