"""Thread count of the Numba kernels."""
import numba

from .errors import ConfigError


def set_num_threads(n):
    """Use ``n`` threads in every parallel kernel (wraps ``numba.set_num_threads``).

    Parameters
    ----------
    n : int
        Between 1 and ``numba.config.NUMBA_NUM_THREADS`` (the cores found at start-up).
    """
    limit = numba.config.NUMBA_NUM_THREADS
    if not isinstance(n, int) or not 1 <= n <= limit:
        raise ConfigError(f"set_num_threads: n must be an int in [1, {limit}], got {n!r}")
    numba.set_num_threads(n)


def get_num_threads():
    """Threads the parallel kernels use now."""
    return numba.get_num_threads()
