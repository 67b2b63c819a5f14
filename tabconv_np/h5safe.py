"""Reading untrusted HDF5 files: read-only, walked and checked before any data is read.

:func:`open_h5` is the only way the package opens an HDF5 file it did not
just write (``tabconv_np.load``, the Keras importer).  Before handing the file
over it walks every link, without following any, and refuses what would make
HDF5 read outside the file or read something that was never written:

* soft links and external links (a name pointing elsewhere, maybe another file);
* virtual datasets and datasets with external raw storage (their bytes live
  in other files, e.g. under ``/etc``);
* datasets created but never written (they would read as the fill value);
* filters other than HDF5's built-in ones (reading would load a plugin library).

Every h5py exception (``OSError``, ``KeyError``, ``RuntimeError``,
``ValueError``, ``TypeError``) raised while the file is open becomes a
:class:`~tabconv_np.errors.WeightFileError` naming the file; :func:`read`
names the dataset too.
"""
import os
from contextlib import contextmanager

import numpy as np

from .errors import TabConvError, WeightFileError
from .validate import regular_file

#: What h5py raises on damaged files (RecursionError is a RuntimeError).
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)

#: HDF5's built-in filters: deflate, shuffle, Fletcher-32, szip, n-bit, scale-offset.
BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6})


@contextmanager
def open_h5(source, where):
    """The HDF5 file ``source`` opened read-only and checked whole (see the module docstring).

    Parameters
    ----------
    source : str, os.PathLike or file object
    where : str
        How messages name the file.

    Yields
    ------
    h5py.File

    Raises
    ------
    WeightFileError
        Not a regular file, not HDF5, or a refused or damaged object; also for
        any h5py error raised inside the ``with`` block.
    """
    import h5py
    if isinstance(source, (str, os.PathLike)):
        source = regular_file(source, WeightFileError)
    try:
        f = h5py.File(source, "r")
    except H5_ERRORS as e:
        raise WeightFileError(f"{where}: not a readable HDF5 file (truncated or another format?): "
                              f"{e}") from None
    try:
        with f:
            check_tree(f, where)
            yield f
    except TabConvError:
        raise
    except H5_ERRORS as e:
        raise WeightFileError(f"{where}: damaged HDF5 file: {type(e).__name__}: {e}") from None


def check_tree(f, where):
    """Walk every link of ``f`` without following one; refuse links and datasets that
    reach outside the file or were never written.  Damage met on the way is a
    WeightFileError naming the object."""
    seen, stack = set(), [("", f)]
    while stack:
        path, group = stack.pop()
        try:
            names = list(group)
        except H5_ERRORS as e:
            raise WeightFileError(f"{where}: group {path or '/'} cannot be read (damaged file): {e}") from None
        for name in names:
            full = f"{path}/{name}"
            try:
                child = _follow_hard_link(group, name, full, where, seen)
            except H5_ERRORS as e:
                raise WeightFileError(f"{where}: {full} cannot be read (damaged file): {e}") from None
            if child is not None:
                stack.append((full, child))


def _follow_hard_link(group, name, full, where, seen):
    """Check link ``name`` of ``group`` (a dataset is checked here); the group it leads to
    when not ``seen`` yet, else None."""
    import h5py
    link = group.get(name, getlink=True)
    if isinstance(link, h5py.SoftLink):
        raise WeightFileError(f"{where}: {full} is a soft link to {link.path}; links are refused "
                              f"(store the object itself)")
    if isinstance(link, h5py.ExternalLink):
        raise WeightFileError(f"{where}: {full} is an external link to {link.filename}:"
                              f"{link.path}; a weight file may not refer to other files")
    if not isinstance(link, h5py.HardLink):
        raise WeightFileError(f"{where}: {full} is a {type(link).__name__}; refused")
    obj = group[name]
    addr = h5py.h5o.get_info(obj.id).addr
    if addr in seen:
        return None
    seen.add(addr)
    if isinstance(obj, h5py.Dataset):
        check_dataset(obj, f"{where}: dataset {full}")
    return obj if isinstance(obj, h5py.Group) else None


def check_dataset(ds, where):
    """Refuse a dataset whose data lies in other files, needs a filter plugin or was never written."""
    if ds.is_virtual:
        raise WeightFileError(f"{where} is a virtual dataset (its data lies in other files); refused")
    plist = ds.id.get_create_plist()
    if plist.get_external_count():
        name = plist.get_external(0)[0].decode("utf-8", "replace")
        raise WeightFileError(f"{where} keeps its data in the external file {name!r}; a weight file "
                              f"may not refer to other files")
    plugins = sorted({plist.get_filter(i)[0] for i in range(plist.get_nfilters())} - BUILTIN_FILTERS)
    if plugins:
        raise WeightFileError(f"{where} needs HDF5 filter(s) {plugins}, which would load a plugin "
                              f"library; refused (only HDF5's built-in filters are read)")
    if ds.size and ds.shape and not _written(ds):
        raise WeightFileError(f"{where} was created but never (fully) written; its values would be "
                              f"the fill value")


def _written(ds):
    """Whether every byte (contiguous) or every chunk (chunked) of ``ds`` is stored."""
    if ds.chunks is None:
        return ds.id.get_storage_size() > 0
    need = int(np.prod([-(-s // c) for s, c in zip(ds.shape, ds.chunks)], dtype=np.int64))
    return ds.id.get_num_chunks() == need


def read(ds, where):
    """All of dataset ``ds`` as an array; damage (a checksum mismatch, truncation) is a
    WeightFileError naming ``where``."""
    try:
        return ds[()]
    except H5_ERRORS as e:
        raise WeightFileError(f"{where} cannot be read (damaged or truncated file): {e}") from None
