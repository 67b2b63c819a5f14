"""How every kernel is compiled.

``kernel(fn)`` returns a :class:`Kernel`, the named pair ``(parallel,
serial)`` of jitted versions of one Python function written with ``prange``:
``.parallel`` threads the outermost ``prange`` loop, ``.serial`` runs it as a
plain ``range``.  Both compute each output element with the same sequence of
operations, so they agree bitwise.  ``k.pick(work)`` (or ``pick(k, work)``)
chooses between them by the amount of work; ``for fn in k`` visits both
(warm-up code).

Compilation is lazy (no signatures), so importing a kernel module compiles
nothing.  Compiled code is cached on disk (``cache=True``) unless the
environment variable ``TABCONV_NO_CACHE`` is set to a non-empty value other
than ``0``.
"""
import os
import types
from typing import Callable, NamedTuple

# Numba's "omp" threading layer is GNU libgomp, whose idle workers busy-wait
# for 300,000 spins after every parallel region.  The convolution drivers
# alternate Numba regions with multithreaded OpenBLAS calls, and on a 2-core
# machine the spinning workers take a core from BLAS: measured on ResNet
# layers at 2 threads, im2col ran 2x slower (batch-1 layers up to 5x) than
# with short spinning.  libgomp reads GOMP_SPINCOUNT once, when it is loaded
# (Numba loads it at the first parallel kernel call), so it is set here, at
# import; a value the user set wins.  torch ships a libgomp.so.1 too and the
# process then shares one: if torch was imported first, libgomp is already
# initialised with the default and this setting comes too late (measured:
# ~10x slower im2col at 2 threads); hence the warning below.  Fix: import
# tabconv_np before torch, or export GOMP_SPINCOUNT=1000.
_USER_SPINCOUNT = "GOMP_SPINCOUNT" in os.environ
os.environ.setdefault("GOMP_SPINCOUNT", "1000")


def _libgomp_loaded():
    """Path of the libgomp this process has already loaded, or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libgomp" in line:
                    return line.split()[-1]
    except OSError:                      # not Linux: nothing to check
        pass
    return None


_GOMP = None if _USER_SPINCOUNT else _libgomp_loaded()
if _GOMP:
    import warnings
    warnings.warn(
        f"tabconv_np: libgomp (OpenMP) was loaded before tabconv_np (by {_GOMP}"
        f"{', i.e. torch' if 'torch' in _GOMP else ''}) with its default busy-waiting; "
        "Numba's parallel kernels share it and can run several times slower next to BLAS. "
        "Import tabconv_np first, or set GOMP_SPINCOUNT=1000 in the environment.",
        RuntimeWarning, stacklevel=2)

import numba  # noqa: E402


def free_cores():
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):        # not Linux
        return max(1, os.cpu_count() or 1)


# Never more kernel threads than the cores this process may use: Numba counts
# the machine's cores, which oversubscribes a process pinned to fewer (taskset,
# containers).  tabconv_np.set_num_threads changes it, with the BLAS's.
# The check is against the configured count, as cheap as it gets; set_num_threads starts
# Numba's threading layer, which a pinned process then pays for once at import.
_CORES = free_cores()
if _CORES < numba.config.NUMBA_NUM_THREADS:
    numba.set_num_threads(_CORES)

CACHE = os.environ.get("TABCONV_NO_CACHE", "") in ("", "0")

#: Below this many multiply-adds a kernel call runs serially: thread start-up
#: costs more than the work (docs/background.md, section 4).
PARALLEL_MIN_WORK = 200_000


def _renamed(fn, suffix):
    """A copy of ``fn`` whose qualified name ends in ``suffix``.

    Numba's on-disk cache names its files after the function's qualified name
    and keys entries by signature and CPU, not by the ``parallel`` flag: two
    dispatchers of one function would share (and overwrite) one cache entry,
    so after a cache load the "serial" kernel could run the threaded code.
    The serial kernel is compiled from a renamed copy to keep them apart.
    """
    g = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix,
                           fn.__defaults__, fn.__closure__)
    g.__qualname__ = fn.__qualname__ + suffix
    g.__module__, g.__doc__ = fn.__module__, fn.__doc__
    return g


class Kernel(NamedTuple):
    """The two compiled entries of one kernel function (see the module docstring)."""

    #: Threads the outermost ``prange`` loop.
    parallel: Callable
    #: The same code with ``prange`` run as ``range``; bitwise equal results.
    serial: Callable

    def pick(self, work):
        """:attr:`parallel` when ``work`` is large enough and threads are on, else :attr:`serial`."""
        if work >= PARALLEL_MIN_WORK and numba.get_num_threads() > 1:
            return self.parallel
        return self.serial


def kernel(fn):
    """Compile ``fn`` twice, as a :class:`Kernel`; see the module docstring."""
    par = numba.njit(parallel=True, cache=CACHE, nogil=True)(fn)
    ser = numba.njit(parallel=False, cache=CACHE, nogil=True)(_renamed(fn, "__serial"))
    return Kernel(par, ser)


#: ``pick(kernel, work)`` is ``kernel.pick(work)``.
pick = Kernel.pick
