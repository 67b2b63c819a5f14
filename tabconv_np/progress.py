"""Progress of long work, one phase at a time (layer fitting, evaluation, timing), on stderr.

On a terminal a phase is a bar (tqdm when it is installed, a built-in one
otherwise) whose count runs in order up to its total.  When stderr is not a
terminal (a log file, a pipe, CI) a phase is heartbeat lines instead: one when
it starts, one every ``HEARTBEAT_S`` seconds while it runs (from a timer
thread, so a long step is not silent), one when it ends.
Standard output is never written, so ``--json`` output stays clean.
"""
import sys
import threading
import time

#: Seconds between heartbeat lines of a phase when stderr is not a terminal.
HEARTBEAT_S = 30.0


def say(text, enabled=None, stream=None):
    """Write one line ``text`` on stderr now (nothing when ``enabled`` is False)."""
    if enabled is False:
        return
    stream = stream or sys.stderr
    stream.write(text + "\n")
    stream.flush()


class Progress:
    """``with Progress(total, "fitting layers") as bar: ... bar.update(1, "layer1.0.conv1")``.

    Parameters
    ----------
    total : int
        Steps of the phase; the count reaches it when the phase is done.
    desc : str
        The phase, as the bar or the heartbeat lines name it.
    enabled : bool or None
        True: a bar even when stderr is not a terminal; False: silent; None: a
        bar on a terminal, heartbeat lines otherwise.
    stream : file, optional
        Default ``sys.stderr``.
    """

    def __init__(self, total, desc="", enabled=None, stream=None):
        self.total, self.desc, self.n, self.note = int(total), desc, 0, ""
        self.stream = stream or sys.stderr
        tty = self.stream.isatty() if hasattr(self.stream, "isatty") else False
        self.mode = ("off" if enabled is False else "bar" if enabled or tty else "heartbeat")
        self._t0 = self._last = time.perf_counter()
        self._tqdm = None
        if self.mode == "bar":
            try:
                from tqdm import tqdm
                self._tqdm = tqdm(total=self.total, desc=desc, file=self.stream, leave=False)
            except ImportError:
                self._draw(force=True)
        elif self.mode == "heartbeat":
            self._line(f"{self.desc}: 0/{self.total}")
            self._stop = threading.Event()
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()

    def _heartbeat(self):
        while not self._stop.wait(HEARTBEAT_S):
            note = f" (last: {self.note})" if self.note else ""
            self._line(f"{self.desc}: {self.n}/{self.total}{note}, {time.perf_counter() - self._t0:.0f} s")

    def _line(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()

    def _draw(self, force=False):
        now = time.perf_counter()
        if not force and now - self._last < 0.1 and self.n < self.total:
            return
        self._last = now
        frac = self.n / self.total if self.total else 1.0
        rate = self.n / max(now - self._t0, 1e-9)
        note = f" {self.note}" if self.note else ""
        self.stream.write(f"\r{self.desc} [{'#' * int(30 * frac):<30}] {self.n}/{self.total} "
                          f"{rate:.1f}/s{note}"[:119].ljust(79))
        self.stream.flush()

    def update(self, n=1, note=""):
        """Count ``n`` more steps done; ``note`` names what was just done (e.g. the layer)."""
        self.n += n
        self.note = note
        if self.mode == "off":
            return
        if self._tqdm is not None:
            if note:
                self._tqdm.set_postfix_str(note, refresh=False)
            self._tqdm.update(n)
        elif self.mode == "bar":
            self._draw()

    def close(self):
        """End the phase: clear the bar, or write the heartbeat's last line."""
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.mode == "bar":
            self.stream.write("\r" + " " * 119 + "\r")
            self.stream.flush()
        elif self.mode == "heartbeat":
            self._stop.set()
            self._beat.join()
            self._line(f"{self.desc}: {self.n}/{self.total} in {time.perf_counter() - self._t0:.1f} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
