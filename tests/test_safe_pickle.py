"""The shared restricted unpickler (tabconv_np.safe_pickle) and its two users: the CIFAR
reader (data.restricted_pickle_load) and the torch.save reader (importers.torch_pickle).

Both allow-lists, one error type for both, the opcode prescan's guards (nesting depth
in a subprocess that must not crash, memo, container and array sizes, persistent ids,
extension codes), and that a refused file cannot poison the stand-ins of later loads.
"""
import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tabconv_np import safe_pickle
from tabconv_np.data import _ALLOWED_GLOBALS as DATA_ALLOWED
from tabconv_np.data import load_dataset, restricted_pickle_load
from tabconv_np.errors import DataError, TabConvError, UnsafePickleError, WeightFileError
from tabconv_np.importers import read_torch
from tabconv_np.importers import torch_pickle
from helpers import mutate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_ALLOWED = torch_pickle._ALLOWED


# --- writing pickles by hand -----------------------------------------------------------------
def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def put(i):
    return b"r" + struct.pack("<I", i)


def get(i):
    return b"j" + struct.pack("<I", i)


def torch_zip(path, pkl):
    """A torch-zip-shaped archive whose data.pkl is the raw pickle ``pkl``."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return str(path)


def torch_legacy(path, pkl):
    """A legacy torch.save file whose object pickle is the raw pickle ``pkl``."""
    with open(path, "wb") as f:
        for part in (0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(part, f, protocol=2)
        f.write(pkl)
        pickle.dump([], f, protocol=2)
    return str(path)


def nested(depth):
    """``[[[...]]]`` ``depth`` lists deep."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


class Recorder:
    calls = []

    @staticmethod
    def record(*args):
        Recorder.calls.append(args)
        return len(Recorder.calls)


# --- both allow-lists, one error type ----------------------------------------------------------
class _System:
    def __reduce__(self):
        return (os.system, ("true",))


def test_one_error_type_for_both_readers(tmp_path):
    evil = pickle.dumps({"w": _System()}, protocol=2)
    errors = []
    for call in (lambda: restricted_pickle_load(evil, "batch.pkl"),
                 lambda: read_torch(torch_zip(tmp_path / "evil.pt", evil)),
                 lambda: read_torch(torch_legacy(tmp_path / "evil_legacy.pt", evil))):
        with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system") as e:
            call()
        errors.append(e.value)
    assert "batch.pkl" in str(errors[0]) and "evil.pt" in str(errors[1])
    assert "evil_legacy.pt" in str(errors[2])
    assert "state_dict()" in str(errors[1])             # the torch reader's helpful hint
    for e in errors:                                    # old callers catch either type
        assert isinstance(e, WeightFileError) and isinstance(e, DataError)


def test_each_reader_has_its_own_allow_list(tmp_path):
    # an ndarray is plain data to the CIFAR reader, but not a tensor to the torch reader
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    blob = pickle.dumps({"w": arr}, protocol=2)
    np.testing.assert_array_equal(restricted_pickle_load(blob)["w"], arr)
    with pytest.raises(UnsafePickleError, match=r"numpy\.(_core|core)\.multiarray\._reconstruct"):
        read_torch(torch_zip(tmp_path / "np.pt", blob))
    # a torch tensor rebuild is not on the CIFAR reader's list
    tensor = b"\x80\x02" + op_global("torch._utils", "_rebuild_tensor_v2") + b")R."
    with pytest.raises(UnsafePickleError, match=r"torch\._utils\._rebuild_tensor_v2.*refused"):
        restricted_pickle_load(tensor)
    # _codecs.encode: one shared stand-in
    key = ("_codecs", "encode")
    assert DATA_ALLOWED[key] is TORCH_ALLOWED[key] is safe_pickle.CODECS_ENCODE[key]
    assert restricted_pickle_load(pickle.dumps(b"\x00\xff", protocol=2)) == b"\x00\xff"
    rot13 = b"\x80\x02" + op_global("_codecs", "encode") + op_str("abc") + op_str("rot13") + b"\x86R."
    with pytest.raises(UnsafePickleError, match="_codecs.encode"):
        restricted_pickle_load(rot13)


def test_generic_allow_list_and_nothing_runs_before_a_refusal():
    Recorder.calls.clear()
    allowed = {("rec", "record"): Recorder.record}
    good = b"\x80\x02" + op_global("rec", "record") + b"K\x01K\x02\x86R."
    assert safe_pickle.load(good, allowed, "good.pkl") == 1 and Recorder.calls == [(1, 2)]
    # the refused global comes after an allowed call: the prescan refuses before the call
    bad = b"\x80\x02(" + op_global("rec", "record") + b"K\x03\x85R" + op_global("os", "system") \
        + op_str("true") + b"\x85Rl."
    with pytest.raises(UnsafePickleError, match=r"bad\.pkl.*os\.system.*refused"):
        safe_pickle.load(bad, allowed, "bad.pkl")
    # the same through protocol 4's STACK_GLOBAL with memoized names
    bad4 = b"\x80\x04(" + op_str("rec") + b"\x94" + op_str("record") + b"\x94\x93K\x03\x85R" \
        + b"h\x00" + op_str("system") + b"\x93" + op_str("true") + b"\x85Rl."
    with pytest.raises(UnsafePickleError, match=r"rec\.system"):
        safe_pickle.load(bad4, allowed, "bad4.pkl")
    assert Recorder.calls == [(1, 2)]
    # what find_class hands out is a read-only wrapper, never the function itself
    u = safe_pickle.RestrictedUnpickler(io.BytesIO(b""), allowed, "x")
    g = u.find_class("rec", "record")
    assert isinstance(g, safe_pickle.Global) and g is not Recorder.record
    with pytest.raises(AttributeError):
        g.fn = print


# --- the depth bomb: refused before unpickling, in a process that survives -------------------
BOMB_SCRIPT = """
import sys, pickle
from tabconv_np.data import restricted_pickle_load
from tabconv_np.importers import read_torch
from tabconv_np.errors import UnsafePickleError
for path in sys.argv[1:]:
    try:
        if path.endswith('.pt'):
            read_torch(path)
        else:
            restricted_pickle_load(open(path, 'rb').read(), path)
        print('LOADED', path)
    except UnsafePickleError as e:
        print('REFUSED', path, str(e)[-80:])
    except Exception as e:
        print('OTHER', path, type(e).__name__, e)
"""


def _bombs():
    n = 1_000_000
    out = {
        # {((((...),),),): 0}: hashing the key recurses in C once per level
        "tuple_key": b"\x80\x02}" + b")" + b"\x85" * n + b"K\x00s.",
        # {{{...}: ...}: nested dicts as values, and lists
        "dicts": b"\x80\x02}" + b"K\x00}" * (n // 3) + b"s" * (n // 3) + b".",
        "lists": nested(n // 2),
    }
    # the chain is made by mutation after the lists exist: every list is one level deep
    # when it is created; only the whole graph shows the 50,000 levels
    m = 50_000
    chain = b"\x80\x02" + b"".join(b"]" + put(i) + b"0" for i in range(m))
    chain += b"".join(get(i) + get(i + 1) + b"a0" for i in range(m - 1))
    out["mutation_chain"] = chain + get(0) + b"."
    out["cycle"] = b"\x80\x02]" + put(0) + get(0) + b"a."
    return out


def test_deep_nesting_is_refused_in_a_surviving_process(tmp_path):
    paths = []
    for name, blob in _bombs().items():
        paths.append(str(tmp_path / f"{name}.pkl"))
        with open(paths[-1], "wb") as f:
            f.write(blob)
        if name in ("tuple_key", "mutation_chain"):
            paths.append(torch_zip(tmp_path / f"{name}_zip.pt", blob))
            paths.append(torch_legacy(tmp_path / f"{name}_legacy.pt", blob))
    r = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, *paths], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stdout.splitlines()
    assert len(lines) == len(paths), r.stdout
    for line in lines:
        assert line.startswith("REFUSED") and "deep" in line, line


def test_the_tuple_key_bomb_is_real(tmp_path):
    # plain pickle.loads of it dies (C stack overflow) or gives up with RecursionError
    path = tmp_path / "bomb.pkl"
    path.write_bytes(_bombs()["tuple_key"])
    code = ("import pickle, sys\n"
            "try:\n"
            f"    pickle.loads(open({str(path)!r}, 'rb').read())\n"
            "except RecursionError:\n"
            "    sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert r.returncode < 0 or r.returncode == 3, r.returncode


def test_depth_limit_boundary():
    allowed = {}
    d = safe_pickle.MAX_DEPTH
    got = safe_pickle.load(nested(d), allowed, "ok.pkl")
    for _ in range(d - 1):
        got = got[0]
    assert got == []
    with pytest.raises(UnsafePickleError, match=f"ok2.pkl.*more than {d} deep"):
        safe_pickle.load(nested(d + 1), allowed, "ok2.pkl")
    # the data reader counts the same way
    with pytest.raises(UnsafePickleError, match="deep"):
        restricted_pickle_load(nested(d + 1))


# --- the other guards ----------------------------------------------------------------------------
def test_memo_container_and_object_limits():
    lists = b"\x80\x02(" + b"".join(b"]" + put(i) for i in range(20)) + b"l."
    assert len(safe_pickle.load(lists, {}, "m.pkl")) == 20
    with pytest.raises(UnsafePickleError, match="more than 10 memo entries"):
        safe_pickle.load(lists, {}, "m.pkl", max_memo=10)
    with pytest.raises(UnsafePickleError, match="more than 10 containers"):
        safe_pickle.load(lists, {}, "m.pkl", max_objects=10)
    with pytest.raises(UnsafePickleError, match="more than 10 objects wait"):
        safe_pickle.load(lists, {}, "m.pkl", max_items=10)
    appends = b"\x80\x02]" + b"(" + b"K\x01" * 8 + b"e" + b"(" + b"K\x01" * 8 + b"e."
    assert safe_pickle.load(appends, {}, "a.pkl") == [1] * 16
    with pytest.raises(UnsafePickleError, match="container holds more than 12 items"):
        safe_pickle.load(appends, {}, "a.pkl", max_items=12)
    # memo damage is corruption, in the reader's own error type
    for blob in (b"\x80\x02" + get(5) + b".", b"\x80\x02]" + put(7) + b"."):
        with pytest.raises(DataError, match="memo index") as e:
            restricted_pickle_load(blob, "memo.pkl")
        assert not isinstance(e.value, UnsafePickleError) and "memo.pkl" in str(e.value)


def test_persistent_ids_and_extension_codes_refused(tmp_path):
    for blob in (b"\x80\x02K\x01Q.", b"Pstorage0\n."):
        with pytest.raises(UnsafePickleError, match="persistent ids"):
            restricted_pickle_load(blob)
    # a torch legacy header pickle may not use them either
    path = tmp_path / "pid.pt"
    with open(path, "wb") as f:
        pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
        f.write(b"\x80\x02K\x01Q.")
    with pytest.raises(UnsafePickleError, match="persistent ids"):
        read_torch(str(path))
    with pytest.raises(UnsafePickleError, match="extension code"):
        restricted_pickle_load(b"\x80\x02\x82\x01.")


def test_array_dtype_and_size_limits():
    for name in ("O", "U2", "V8", "M8", "c8", "f16", b"O8"):
        with pytest.raises(UnsafePickleError, match="dtype"):
            safe_pickle.safe_dtype(name)
    assert safe_pickle.safe_dtype("f4", ">") == np.dtype(">f4")
    assert safe_pickle.check_shape([2, 3], 4) == (2, 3)
    for shape in ((1 << 20, 1 << 20), (-1,), (2.0,), (True,), (1,) * 17, "ab"):
        with pytest.raises(UnsafePickleError):
            safe_pickle.check_shape(shape, 1)

    class Huge:
        def __reduce__(self):
            return (_frombuffer(), (b"x", np.dtype("u1"), (1 << 20, 1 << 20), "C"))

    with pytest.raises(UnsafePickleError, match="more than"):
        restricted_pickle_load(pickle.dumps(Huge(), protocol=2))


def _frombuffer():
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:
        from numpy.core.numeric import _frombuffer
    return _frombuffer


# --- stand-ins are never shared mutable state -------------------------------------------------------
def _build(module, name, **attrs):
    """``module.name`` with BUILD ``(None, attrs)``: slot-state assignment on a global."""
    d = b"}(" + b"".join(op_str(k) + v for k, v in attrs.items()) + b"u"
    return b"\x80\x02" + op_global(module, name) + b"(N" + d + b"tb."


POISON = [
    ("torch", "FloatStorage", {"code": b"X\x02\x00\x00\x00i4", "itemsize": b"K\x04"}),
    ("torch", "float32", {"code": b"X\x02\x00\x00\x00f2"}),
    ("torch._utils", "_rebuild_tensor_v2", {"__defaults__": b"(K\x00t"}),
    ("_codecs", "encode", {"__defaults__": b"(X\x06\x00\x00\x00latin1t"}),
    ("collections", "OrderedDict", {"fromkeys": b"N"}),
]


def test_build_on_a_stand_in_is_refused_then_real_files_load(tmp_path):
    torch = pytest.importorskip("torch")
    for i, (module, name, attrs) in enumerate(POISON):
        blob = _build(module, name, **attrs)
        for write in (torch_zip, torch_legacy):
            with pytest.raises(UnsafePickleError, match="BUILD"):
                read_torch(write(tmp_path / f"poison{i}.pt", blob))
        # the stand-ins refuse it themselves too, when the prescan is skipped
        with pytest.raises(UnsafePickleError, match="BUILD"):
            pickle.Unpickler.load(safe_pickle.RestrictedUnpickler(
                io.BytesIO(blob), TORCH_ALLOWED, "direct.pkl"))
    assert TORCH_ALLOWED["torch", "FloatStorage"].code == "f4"
    assert TORCH_ALLOWED["torch", "float32"].code == "f4"
    with pytest.raises(AttributeError):
        TORCH_ALLOWED["torch", "FloatStorage"].code = "i4"
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict(
        w=torch.randn(3, 4, generator=g), h=torch.randn(5, generator=g).half(),
        d=torch.randn(2, 2, generator=g).double(), n=torch.arange(7), b=torch.tensor([True, False]))
    for fmt in ("zip", "legacy"):
        path = str(tmp_path / f"good_{fmt}.pt")
        torch.save(sd, path, _use_new_zipfile_serialization=(fmt == "zip"))
        got = read_torch(path)
        for k, v in sd.items():
            want = v.float().numpy() if v.dtype == torch.float16 else v.numpy()
            assert got[k].dtype == want.dtype, k
            np.testing.assert_array_equal(got[k], want, err_msg=k)


def test_build_on_data_stand_ins_is_refused(tmp_path):
    for module, name in (("numpy", "dtype"), ("numpy", "ndarray"),
                         ("numpy.core.multiarray", "_reconstruct"), ("_codecs", "encode")):
        blob = _build(module, name, __init__=b"N")
        with pytest.raises(UnsafePickleError, match="BUILD"):
            restricted_pickle_load(blob)
        with pytest.raises(UnsafePickleError, match="BUILD"):
            pickle.Unpickler.load(safe_pickle.RestrictedUnpickler(io.BytesIO(blob), DATA_ALLOWED))
    arr = np.arange(12, dtype=">i4").reshape(3, 4)
    got = restricted_pickle_load(pickle.dumps({"a": arr, "b": np.float32(1.5).tobytes()}, protocol=2))
    assert got["a"].dtype == np.dtype(">i4") and got["b"] == np.float32(1.5).tobytes()
    np.testing.assert_array_equal(got["a"], arr)


# --- damaged pickles: only project errors, through both readers -----------------------------------
_GOOD = pickle.dumps({"data": np.arange(48, dtype=np.uint8).reshape(2, 24), "labels": [1, 2],
                      "nested": {"t": (1, 2.5, "x", b"y"), "l": [[], {}]}}, protocol=2)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_pickles_raise_project_errors(data):
    blob = mutate(data, _GOOD, st.integers(0, len(_GOOD) - 1))
    for allowed in (DATA_ALLOWED, TORCH_ALLOWED):
        try:
            safe_pickle.load(blob, allowed, "fuzz.pkl", encoding="bytes", malformed=DataError)
        except TabConvError as e:
            assert "fuzz.pkl" in str(e)


def test_cifar_reader_still_refuses_through_load_dataset(tmp_path):
    (tmp_path / "test_batch").write_bytes(nested(safe_pickle.MAX_DEPTH + 5))
    with pytest.raises(DataError, match="test_batch.*deep"):
        load_dataset("cifar10", "test", data_dir=str(tmp_path))
