"""A dependency-free progress bar for long work (calibration, k-means, evaluation).

Draws on stderr only when stderr is a terminal (or ``force=True``), so logs and
``--json`` output stay clean.  Uses tqdm when it is installed.
"""
import sys
import time


class Progress:
    """``with Progress(total, "k-means") as bar: ... bar.update(n)``."""

    def __init__(self, total, desc="", enabled=None, stream=None):
        self.total, self.desc, self.n = int(total), desc, 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._tqdm = None
        if self.enabled:
            try:
                from tqdm import tqdm
                self._tqdm = tqdm(total=self.total, desc=desc, file=self.stream, leave=False)
            except ImportError:
                pass

    def update(self, n=1):
        self.n += n
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.update(n)
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and self.n < self.total:
            return
        self._last = now
        frac = self.n / self.total if self.total else 1.0
        bar = "#" * int(30 * frac)
        rate = self.n / max(now - self._t0, 1e-9)
        self.stream.write(f"\r{self.desc} [{bar:<30}] {self.n}/{self.total} {rate:.1f}/s")
        self.stream.flush()

    def close(self):
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
