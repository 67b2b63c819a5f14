"""How every kernel is compiled.

``kernel(fn)`` returns a pair ``(parallel, serial)`` of jitted versions of one
Python function written with ``prange``: the parallel one threads the
outermost ``prange`` loop, the serial one runs it as a plain ``range``.  Both
compute each output element with the same sequence of operations, so they
agree bitwise.

Compilation is lazy (no signatures), so importing a kernel module compiles
nothing.  Compiled code is cached on disk (``cache=True``) unless the
environment variable ``TABCONV_NO_CACHE`` is set to a non-empty value other
than ``0``.
"""
import os

import numba

CACHE = os.environ.get("TABCONV_NO_CACHE", "") in ("", "0")

#: Below this many multiply-adds a kernel call runs serially: thread start-up
#: costs more than the work (RESEARCH.md section 5).
PARALLEL_MIN_WORK = 200_000


def kernel(fn):
    """Compile ``fn`` twice: ``(parallel, serial)``; see the module docstring."""
    par = numba.njit(parallel=True, cache=CACHE, nogil=True)(fn)
    ser = numba.njit(parallel=False, cache=CACHE, nogil=True)(fn)
    return par, ser


def pick(pair, work):
    """The parallel kernel of ``pair`` when ``work`` is large enough, else the serial one."""
    return pair[0] if work >= PARALLEL_MIN_WORK and numba.get_num_threads() > 1 else pair[1]
