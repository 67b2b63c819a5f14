"""Reading ``torch.save`` files without torch, through a restricted unpickler.

Two on-disk formats exist:

* **zip** (torch >= 1.6, the default): a zip archive ``<name>/data.pkl`` (the
  pickled object), ``<name>/byteorder`` (``little`` or ``big``),
  ``<name>/data/<key>`` (one raw storage per key), plus version files;
* **legacy** (``_use_new_zipfile_serialization=False``): five consecutive
  pickles -- magic number, protocol version (1001), ``sys_info`` dict, the
  object, the sorted list of storage keys -- followed, for each key, by an
  int64 element count and the raw bytes of that storage.

In both, a tensor is pickled as a call of ``torch._utils._rebuild_tensor_v2``
on ``(storage, storage_offset, size, stride, ...)``, the storage being a
*persistent id* ``('storage', torch.FloatStorage, key, location, numel)``.

Unpickling goes through :mod:`tabconv_np.safe_pickle` (opcode prescan with
depth, memo and size limits, read-only stand-ins, one error type for refusals);
this module supplies only the allow-list, the storage references and the
conversion to NumPy.  The allow-list resolves only these globals, each to a
harmless stand-in written here (never to torch itself):

* ``collections.OrderedDict``;
* ``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2`` / ``_rebuild_tensor_v3``,
  ``_rebuild_parameter`` / ``_rebuild_parameter_with_state`` -> a reference to
  a slice of a storage, turned into a NumPy array once the storages are read;
* ``torch.<X>Storage`` and the ``torch.<dtype>`` objects -> dtype markers;
* ``_codecs.encode`` (protocol-2 pickles of ``bytes``) -> safe_pickle's latin-1 stand-in.

Every other global -- ``os.system``, ``builtins.eval``,
``torch.storage._load_from_bytes`` (which unpickles again), a model class
from ``__main__`` or ``torch.nn`` -- raises
:class:`~tabconv_np.errors.UnsafePickleError` naming it, *before* anything
is called.  Loading therefore never runs code from the file and never imports
torch.  Tensors come back as NumPy arrays (storage offset, size and stride
honoured; float16 and bfloat16 widened to float32; integer and bool dtypes
kept).  Truncated or corrupt files raise
:class:`~tabconv_np.errors.WeightFileError`.
"""
import collections
import io
import os
import re
import struct

import numpy as np

from .. import safe_pickle
from ..errors import TabConvError, WeightFileError
from .formats import open_zip, read_member, read_source

#: First pickle of a legacy file, and the second.
MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001

#: A single tensor may not hold more elements than its storage unless it is this small.
_MAX_EXPANDED = 1 << 24


class _DType(safe_pickle.StandIn):
    """Stand-in for ``torch.FloatStorage`` / ``torch.float32``: a NumPy dtype code (read-only,
    shared by every load)."""

    __slots__ = ("name", "code", "itemsize")

    def __init__(self, name, code, itemsize):
        self._init(name=name, code=code, itemsize=itemsize)

    def numpy(self, byteorder):
        """The NumPy dtype of the raw bytes (bfloat16 read as uint16)."""
        code = "u2" if self.code == "bf16" else self.code
        return safe_pickle.safe_dtype(code, "<" if byteorder == "little" else ">")

    def __repr__(self):
        return f"torch.{self.name}"


_CODES = {  # storage class / dtype names -> (numpy code, item size)
    "float32": ("f4", 4), "float": ("f4", 4), "float64": ("f8", 8), "double": ("f8", 8),
    "float16": ("f2", 2), "half": ("f2", 2), "bfloat16": ("bf16", 2),
    "int64": ("i8", 8), "long": ("i8", 8), "int32": ("i4", 4), "int": ("i4", 4),
    "int16": ("i2", 2), "short": ("i2", 2), "int8": ("i1", 1), "uint8": ("u1", 1),
    "bool": ("b1", 1),
}
_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "UntypedStorage": "uint8",
}


class _StorageRef(safe_pickle.Sealed):
    """A storage named by the pickle; its bytes are attached after unpickling (no BUILD)."""

    __slots__ = ("key", "dtype", "numel", "view", "data")

    def __init__(self, key, dtype, numel, view=None):
        self.key, self.dtype, self.numel, self.view, self.data = key, dtype, numel, view, None


class _TensorRef(safe_pickle.Sealed):
    """A tensor waiting for its storage: ``(storage, offset, size, stride, dtype)`` (no BUILD)."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage, offset, size, stride, dtype=None):
        if not isinstance(storage, _StorageRef):
            raise WeightFileError(f"a tensor refers to {type(storage).__name__}, not a storage")
        if dtype is not None and not isinstance(dtype, _DType):
            raise WeightFileError(f"bad tensor dtype {dtype!r:.80}")
        self.storage = storage
        self.dtype = dtype or storage.dtype
        self.offset = _index(offset, "storage offset")
        self.size = safe_pickle.check_shape(size, self.dtype.itemsize, "tensor")
        self.stride = _shape(stride, "stride")
        if len(self.size) != len(self.stride):
            raise WeightFileError(f"tensor size {self.size} and stride {self.stride} differ in length")


def _index(v, what):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 1 << 48:
        raise WeightFileError(f"bad tensor {what} {v!r:.80}")
    return v


def _shape(v, what):
    if not isinstance(v, (tuple, list)) or len(v) > safe_pickle.MAX_NDIM:
        raise WeightFileError(f"bad tensor {what} {v!r:.80}")
    return tuple(_index(s, what) for s in v)


# --- the stand-ins find_class hands out --------------------------------------------------
def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, *_):
    return _TensorRef(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, *_):
    if not isinstance(data, _TensorRef):
        raise WeightFileError(f"a parameter wraps {type(data).__name__}, not a tensor")
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **safe_pickle.CODECS_ENCODE,
}
for _cls, _dt in _STORAGES.items():
    _ALLOWED[("torch", _cls)] = _DType(_cls, *_CODES[_dt])
for _dt, (_code, _size) in _CODES.items():
    _ALLOWED[("torch", _dt)] = _DType(_dt, _code, _size)

_MODEL_MODULES = ("__main__", "__torch__", "torch.nn", "torch.jit", "torchvision", "timm")


def refusal_message(module, name, where):
    """Why the global ``module.name`` is refused, and what to do instead."""
    full = f"{module}.{name}"
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return (f"{where}: the pickle holds a kind of tensor this reader does not support ({full}: "
                f"quantized, sparse or nested); convert the state dict's tensors to dense float "
                f"tensors before torch.save")
    if module.split(".")[0] in ("__main__", "__torch__") or module.startswith(_MODEL_MODULES) \
            or name[:1].isupper():
        what = (f"{where}: the pickle holds an object of class {full!r} (a whole model saved with "
                f"torch.save(model), or another Python object), which cannot be loaded without "
                f"running its code")
    else:
        what = (f"{where}: refusing the pickled global {full!r}: loading it could run code, and "
                f"the restricted unpickler builds only tensors and plain containers")
    return (f"{what}. Save the weights alone instead: torch.save(model.state_dict(), 'weights.pt') "
            f"(for a checkpoint dict, save checkpoint['state_dict']), then import that file.")


def _storage_loader(storages, where):
    """``persistent_load`` for a pickle whose storages go to ``storages`` (key -> _StorageRef)."""
    def persistent_load(pid):
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise WeightFileError(f"{where}: unsupported persistent id {pid!r:.100}")
        dtype, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(dtype, _DType) or not isinstance(key, str) or not re.fullmatch(r"\w{1,64}", key):
            raise WeightFileError(f"{where}: bad storage reference {pid!r:.100}")
        _index(numel, "storage size")
        ref = storages.get(key)
        if ref is None:
            ref = storages[key] = _StorageRef(key, dtype, numel)
        elif ref.dtype is not dtype or ref.numel != numel:
            raise WeightFileError(f"{where}: storage {key} is described twice, differently")
        if view is None:
            return ref
        # legacy storage views: (view_key, offset, view_size) into the root storage
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)):
            raise WeightFileError(f"{where}: bad storage view {view!r:.100}")
        return _StorageRef(view[0], dtype, _index(view[2], "view size"),
                           view=(ref, _index(view[1], "view offset")))
    return persistent_load


def _load_pickle(f, where, storages=None):
    """The pickle at ``f``'s position, through safe_pickle with the torch allow-list.

    ``storages``: a dict that collects the storages the pickle refers to, or None where
    persistent ids are not expected (the legacy header pickles): then they are refused.
    """
    return safe_pickle.load(f, _ALLOWED, where, encoding="utf-8", refusal=refusal_message,
                            persistent_load=None if storages is None else _storage_loader(storages, where),
                            malformed=WeightFileError)


# --- materialising -------------------------------------------------------------------------
def _array(t, byteorder, where):
    """The NumPy array of a ``_TensorRef`` (storage bytes attached)."""
    st = t.storage
    base_offset = 0
    if st.view is not None:
        root, base_offset = st.view
        st = root
    raw = st.data
    if raw is None:
        raise WeightFileError(f"{where}: storage {st.key} is referenced but missing")
    src = st.dtype.numpy(byteorder)
    dt = t.dtype.numpy(byteorder)
    if len(raw) % dt.itemsize:
        raise WeightFileError(f"{where}: storage {st.key} holds {len(raw)} bytes, not a whole "
                              f"number of {t.dtype.name} elements")
    count = len(raw) // dt.itemsize
    offset = t.offset + base_offset * src.itemsize // dt.itemsize
    numel = int(np.prod(t.size, dtype=np.int64)) if t.size else 1
    if numel == 0:
        arr = np.zeros(t.size, dt)
    else:
        extent = offset + sum((s - 1) * d for s, d in zip(t.size, t.stride)) + 1
        if extent > count or numel > max(count, _MAX_EXPANDED):
            raise WeightFileError(f"{where}: a tensor of size {t.size} (stride {t.stride}, offset "
                                  f"{t.offset}) reaches beyond its storage {st.key} of {count} elements")
        flat = np.frombuffer(raw, dt, count)
        arr = np.lib.stride_tricks.as_strided(flat[offset:], t.size,
                                              [d * dt.itemsize for d in t.stride]).copy()
    if t.dtype.code == "bf16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    elif t.dtype.code == "f2":
        arr = arr.astype(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _materialise(obj, byteorder, where, depth=0):
    if depth > 100:
        raise WeightFileError(f"{where}: objects nested too deeply")
    if isinstance(obj, _TensorRef):
        return _array(obj, byteorder, where)
    if isinstance(obj, dict):
        out = collections.OrderedDict()
        for k, v in obj.items():
            out[k] = _materialise(v, byteorder, where, depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, byteorder, where, depth + 1) for v in obj)
    if isinstance(obj, safe_pickle.Sealed):
        raise WeightFileError(f"{where}: a bare storage, dtype or global ({obj!r:.80}) is not supported")
    return obj


# --- the two formats -------------------------------------------------------------------------
def _read_zip(data, where):
    zf = open_zip(data, where)
    names = zf.namelist()
    pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
    if len(pkls) != 1:
        raise WeightFileError(f"{where}: a zip archive without a single '<name>/data.pkl': not a "
                              f"torch.save file")
    prefix = pkls[0][:-len("data.pkl")]
    if any(n.startswith(prefix + "code/") for n in names) or prefix + "constants.pkl" in names:
        raise WeightFileError(f"{where}: a TorchScript archive (torch.jit.save); save the weights with "
                              f"torch.save(model.state_dict(), 'weights.pt') and import that file")
    try:
        byteorder = zf.read(prefix + "byteorder").decode("ascii").strip() \
            if prefix + "byteorder" in names else "little"
        if byteorder not in ("little", "big"):
            raise WeightFileError(f"{where}: bad byteorder record {byteorder!r:.20}")
        storages = {}
        obj = _load_pickle(io.BytesIO(zf.read(pkls[0])), where, storages)
        for key, ref in storages.items():
            ref.data = read_member(zf, f"{prefix}data/{key}", where, ref.numel * ref.dtype.itemsize)
    except TabConvError:
        raise
    except Exception as e:  # zip CRC errors, truncated pickles, unpickling errors, memory
        raise WeightFileError(f"{where}: corrupt torch zip file: {type(e).__name__}: {e}") from None
    return obj, byteorder


def _read_legacy(data, where):
    f = io.BytesIO(data)
    try:
        magic = _load_pickle(f, where)
        if magic != MAGIC_NUMBER:
            raise WeightFileError(f"{where}: a pickle, but not a torch.save file (wrong magic number)")
        proto = _load_pickle(f, where)
        if proto != PROTOCOL_VERSION:
            raise WeightFileError(f"{where}: unsupported torch legacy protocol {proto!r:.40}")
        info = _load_pickle(f, where)
        if not isinstance(info, dict):
            raise WeightFileError(f"{where}: bad sys_info record")
        byteorder = "little" if info.get("little_endian", True) else "big"
        storages = {}
        obj = _load_pickle(f, where, storages)
        keys = _load_pickle(f, where)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise WeightFileError(f"{where}: bad storage key list")
        for key in keys:
            ref = storages.get(key)
            if ref is None:
                raise WeightFileError(f"{where}: storage {key} is stored but never referenced")
            head = f.read(8)
            if len(head) != 8:
                raise WeightFileError(f"{where}: truncated before storage {key}")
            (numel,) = struct.unpack("<q" if byteorder == "little" else ">q", head)
            if numel != ref.numel:
                raise WeightFileError(f"{where}: storage {key} has {numel} elements on disk, "
                                      f"{ref.numel} in the pickle")
            ref.data = f.read(numel * ref.dtype.itemsize)
            if len(ref.data) != numel * ref.dtype.itemsize:
                raise WeightFileError(f"{where}: truncated inside storage {key}")
        missing = [k for k, r in storages.items() if r.data is None]
        if missing:
            raise WeightFileError(f"{where}: storage {missing[0]} is referenced but not stored")
    except TabConvError:
        raise
    except Exception as e:  # truncated pickles, unpickling errors, memory, struct errors
        raise WeightFileError(f"{where}: corrupt torch legacy file: {type(e).__name__}: {e}") from None
    return obj, byteorder


def load_torch_file(path):
    """The object saved by ``torch.save`` at ``path``, tensors as NumPy arrays.

    Raises
    ------
    UnsafePickleError
        The pickle refers to anything but tensors and plain containers.
    WeightFileError
        Not a torch.save file, or a truncated / corrupt one.
    """
    path = os.fspath(path)
    data = read_source(path)
    if data[:4] == b"PK\x03\x04":
        obj, byteorder = _read_zip(data, path)
    elif data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        obj, byteorder = _read_legacy(data, path)
    else:
        raise WeightFileError(f"{path}: neither a torch zip archive nor a legacy torch.save pickle")
    try:
        return _materialise(obj, byteorder, path)
    except TabConvError:
        raise
    except Exception as e:
        raise WeightFileError(f"{path}: corrupt tensor records: {type(e).__name__}: {e}") from None


_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights",
                    "params", "model_state")


def _is_state(obj):
    return isinstance(obj, dict) and obj and all(isinstance(k, str) for k in obj) \
        and any(isinstance(v, np.ndarray) for v in obj.values())


def read_torch(path):
    """The state dict (``{name: ndarray}``) in a ``torch.save`` file.

    Accepts a saved ``model.state_dict()`` or a checkpoint dict holding one
    under ``state_dict`` / ``model_state_dict`` / ``model`` / ``net`` / ...
    Non-array entries are dropped.  Never imports torch.
    """
    obj = load_torch_file(path)
    if isinstance(obj, dict) and not _is_state(obj):
        for k in _CHECKPOINT_KEYS:
            if _is_state(obj.get(k)):
                obj = obj[k]
                break
    if not _is_state(obj):
        desc = (f"a dict with keys {list(obj)[:8]}" if isinstance(obj, dict)
                else f"a {type(obj).__name__}")
        raise WeightFileError(f"{path}: holds {desc}, not a state dict of tensors; save "
                              f"model.state_dict() with torch.save")
    return collections.OrderedDict((k, v) for k, v in obj.items() if isinstance(v, np.ndarray))
