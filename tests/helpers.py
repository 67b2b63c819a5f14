"""Shared test utilities (imported by test modules; not a test file)."""
import signal
import warnings
from contextlib import contextmanager, nullcontext

from hypothesis import strategies as st

from tabconv_np.models import randomize  # noqa: F401  (re-exported for the tests)


# --- damaged-file checks for the importer tests --------------------------------------------------
class Hang(Exception):
    """Raised by :func:`time_limit` when the guarded block runs too long."""


@contextmanager
def time_limit(seconds):
    """Raise :class:`Hang` in the guarded block after ``seconds`` (SIGALRM; main thread only)."""
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def mutate(data, blob, pos):
    """A truncated or bit-flipped copy of ``blob``: ``data`` is Hypothesis' ``st.data()`` object,
    ``pos`` the strategy for the truncation length and the flipped byte positions."""
    if data.draw(st.booleans(), label="truncate"):
        return blob[:data.draw(pos, label="length")]
    out = bytearray(blob)
    for p in data.draw(st.lists(pos, min_size=1, max_size=4), label="positions"):
        out[p] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    return bytes(out)


def check_damaged(path, blob, ignore_warnings=False, **kw):
    """Write ``blob`` to ``path`` and import it: it must either load or raise a ``TabConvError``,
    within 10 s.  ``kw`` goes to ``import_model``."""
    from tabconv_np.errors import TabConvError
    from tabconv_np.importers import import_model

    with open(path, "wb") as f:
        f.write(blob)
    with time_limit(10), (warnings.catch_warnings() if ignore_warnings else nullcontext()):
        if ignore_warnings:
            warnings.simplefilter("ignore")
        try:
            import_model(path, **kw)
        except TabConvError:
            pass
