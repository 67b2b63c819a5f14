"""Thread counts of the Numba kernels and of the BLAS, set together.

The convolution drivers alternate Numba parallel regions (lowering, table
lookups) with BLAS matrix products.  Two pools that each take every core
oversubscribe the machine: on a busy 2-core machine batch-1 latency varied
between 10 and 196 ms with the default BLAS threads, and was 3.3 ms with one.
:func:`set_num_threads` therefore sets both, the BLAS through threadpoolctl
(the library made for exactly this; it finds OpenBLAS, MKL or BLIS whichever
numpy loaded).  The BLAS is never called from inside a Numba parallel region,
so the two pools take turns rather than compete.

Related, both set at import unless the user set them: ``GOMP_SPINCOUNT=1000``
(:mod:`tabconv_np.kernels._jit`) keeps Numba's idle OpenMP workers from
spinning on the cores the BLAS needs next, and ``OPENBLAS_THREAD_TIMEOUT=20``
(``tabconv_np/__init__.py``) keeps OpenBLAS's idle threads from spinning on
the cores Numba needs next; the second only when tabconv_np is imported
before numpy.
"""
import numba

from .errors import ConfigError
from .kernels._jit import free_cores  # noqa: F401  (part of this module's API)

#: The threadpoolctl limit in force (kept so that it is not garbage-collected
#: and can be read back); None until set_num_threads is first called.
_BLAS_LIMIT = None


def set_num_threads(n):
    """Use ``n`` threads in every parallel kernel and in the BLAS.

    Parameters
    ----------
    n : int
        Between 1 and ``numba.config.NUMBA_NUM_THREADS`` (the cores found at
        start-up, or the environment's ``NUMBA_NUM_THREADS``).

    Notes
    -----
    Sets Numba's count (``numba.set_num_threads``) and limits every BLAS
    numpy loaded to ``n`` threads (``threadpoolctl``).  Read both back with
    :func:`get_num_threads` and :func:`get_blas_threads`.
    """
    global _BLAS_LIMIT
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise ConfigError(f"set_num_threads: n must be an int in [1, {limit}], got {n!r}")
    numba.set_num_threads(n)
    from threadpoolctl import ThreadpoolController
    _BLAS_LIMIT = ThreadpoolController().limit(limits=n, user_api="blas")


def get_num_threads():
    """Threads the parallel kernels use now."""
    return numba.get_num_threads()


def get_blas_threads():
    """Threads of the BLAS numpy uses (the largest, if several are loaded); None if none is found."""
    from threadpoolctl import threadpool_info
    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else None
