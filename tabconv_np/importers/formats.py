"""Format detection: what kind of file a model source is, judged by its content.

A leaf module of :mod:`tabconv_np.importers`: it imports nothing from the
importers package, so that every format module (:mod:`.torch_pickle`,
:mod:`.keras`, :mod:`.onnx_import`, ...) can use :func:`read_source` and
:mod:`.dispatch` can import the format modules, with imports in one direction.

=========================  =====================================================
zip with ``*/data.pkl``     PyTorch ``torch.save`` (torch >= 1.6)
zip with ``config.json``    Keras 3 ``.keras``
pickle with torch's magic   PyTorch legacy ``torch.save`` (``_use_new_zipfile_serialization=False``)
HDF5 signature              Keras 2 ``.h5`` / Keras 3 ``.weights.h5``
protobuf (``ir_version``)   ONNX
=========================  =====================================================
"""
import io
import os
import zipfile

from .. import validate
from ..errors import WeightFileError

FORMATS = ("torch-zip", "torch-legacy", "keras-zip", "hdf5", "onnx")
_HDF5 = b"\x89HDF\r\n\x1a\n"


def read_source(path, size=-1):
    """The first ``size`` bytes (all of them by default) of the file at ``path``.

    Shared by the importers so that an unreadable source fails the same way
    everywhere.

    Raises
    ------
    WeightFileError
        ``"{path}: cannot read: ..."`` when the file cannot be opened or read;
        a FIFO, device or directory is refused before it is opened.
    """
    validate.regular_file(path, WeightFileError)
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as e:
        raise WeightFileError(f"{path}: cannot read: {e}") from None


def detect_format(path):
    """One of ``FORMATS`` for the file at ``path``, judged by its content.

    Raises
    ------
    WeightFileError
        Missing, empty or unrecognised file (the message says what was found).
    """
    path = os.fspath(path)
    head = read_source(path, 4096)
    if not head:
        raise WeightFileError(f"{path}: empty file")
    if head[:4] == b"PK\x03\x04":
        with open_zip(path, path) as zf:
            names = zf.namelist()
        if any(n.endswith("data.pkl") and n.count("/") <= 1 for n in names):
            return "torch-zip"
        if "config.json" in names and "model.weights.h5" in names:
            return "keras-zip"
        raise WeightFileError(f"{path}: a zip archive of unknown kind (neither torch.save nor .keras)")
    if any(head[o:o + 8] == _HDF5 for o in (0, 512, 1024, 2048)):
        return "hdf5"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-legacy"
    if head[257:262] == b"ustar":
        raise WeightFileError(f"{path}: a tar archive: the torch.save format of torch < 0.4 is not "
                              f"supported; load and re-save it with a newer torch")
    if head[:1] == b"\x08" and len(head) > 2:
        return "onnx"
    raise WeightFileError(f"{path}: unrecognised file: not a torch.save file (zip or pickle), not "
                          f"ONNX, not HDF5 (Keras)")


def open_zip(source, where):
    """A ``zipfile.ZipFile`` of ``source`` (bytes or a path) whose members are all plain
    names with believable sizes.

    Refused: names with path components that leave the archive (absolute, ``..``,
    a drive or a backslash), members declaring more bytes than
    :func:`tabconv_np.validate.decompressed_limit` allows (a stored member: more than
    it stores), or compressed bytes beyond the archive's end.  Nothing is
    decompressed here.

    Raises
    ------
    WeightFileError
        Naming ``where``, the member and what is wrong.
    """
    size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
        infos = zf.infolist()
    except Exception as e:  # BadZipFile, LargeZipFile, OSError, ValueError, EOFError, ...
        raise WeightFileError(f"{where}: a zip archive that cannot be read (truncated?): {e}") from None
    try:
        for info in infos:
            name, parts = info.filename, info.filename.split("/")
            if name.startswith("/") or "\\" in name or ".." in parts or ":" in parts[0]:
                raise WeightFileError(f"{where}: zip member {name!r} has a path leaving the archive "
                                      f"(absolute, '..', drive or backslash); refused")
            stored = info.compress_type == zipfile.ZIP_STORED
            if info.compress_size > size or info.file_size > (
                    info.compress_size if stored else validate.decompressed_limit(info.compress_size)):
                raise WeightFileError(f"{where}: zip member {name!r} declares {info.file_size:,} bytes from "
                                      f"{info.compress_size:,} compressed (archive {size:,} bytes; limits "
                                      f"tabconv_np.validate.MAX_BYTES, MAX_COMPRESSION); refused")
    except WeightFileError:
        zf.close()                       # a refused archive is not left open
        raise
    return zf


def read_member(zf, name, where, expected=None):
    """The bytes of member ``name`` of ``zf`` (from :func:`open_zip`); when ``expected`` is
    given, the member's declared size must equal it before anything is read.

    Raises
    ------
    WeightFileError
        Missing member, wrong declared size, CRC or decompression error.
    """
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise WeightFileError(f"{where}: zip member {name} is missing") from None
    if expected is not None and info.file_size != expected:
        raise WeightFileError(f"{where}: zip member {name} holds {info.file_size:,} bytes, "
                              f"expected {expected:,}")
    try:
        return zf.read(info)
    except Exception as e:  # BadZipFile (CRC), zlib.error, EOFError, NotImplementedError, ...
        raise WeightFileError(f"{where}: zip member {name} cannot be read (damaged?): "
                              f"{type(e).__name__}: {e}") from None
