"""Writing output files safely: checked before the work, written atomically.

Every file tabconv_np writes (``save``, the CLI's ``-o``) goes through these two
functions, so that

* an existing file is replaced only when the caller says so (``overwrite``);
* a missing or unwritable directory is reported before any work starts;
* the file appears whole or not at all: it is written to a temporary file in
  the same directory and renamed into place (``os.replace``, atomic on POSIX),
  and the temporary file is removed if writing fails or is interrupted.
"""
import os
import tempfile

from .errors import OutputError


def check_output(path, *, overwrite=False, inputs=()):
    """Validate an output path before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
    overwrite : bool
        Whether an existing regular file at ``path`` may be replaced.
    inputs : iterable of str or os.PathLike
        Files the work reads; ``path`` resolving to one of them (symlinks
        included) is refused even with ``overwrite``.

    Returns
    -------
    str
        ``path`` as a string.

    Raises
    ------
    OutputError
        The path names a directory, an existing file (without ``overwrite``),
        one of ``inputs``, or lies in a missing or unwritable directory.
    """
    path = os.fspath(path)
    real = os.path.realpath(path)
    for src in inputs:
        if os.path.exists(src) and real == os.path.realpath(os.fspath(src)):
            raise OutputError(f"{path}: the output is the input file {os.fspath(src)}; "
                              f"write to another path")
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory; give a file name")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"{path}: exists; choose another path or allow replacing it "
                          f"(--force on the command line, overwrite=True in Python)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: directory {folder} is not writable")
    return path


def write_atomic(path, write):
    """Call ``write(tmp_path)`` and rename the result onto ``path``.

    Parameters
    ----------
    path : str
        Final location (already checked by :func:`check_output`).
    write : callable
        Writes the whole file to the temporary path it is given.
    """
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp's 0600 would surprise
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
