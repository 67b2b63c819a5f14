"""Progress: one phase at a time, counts in order up to the total, heartbeat lines off a terminal;
and the demo's plain-number report (tabconv_np.report)."""
import io
import os
import re
import time

import numpy as np
import pytest

import tabconv_np
from tabconv_np import demo, progress
from tabconv_np.models import build
from tabconv_np.progress import Progress
from tabconv_np.report import compared, format_setting, size_ratio

from helpers import randomize

DEMO_MODEL = os.path.join(os.path.dirname(__file__), "..", demo.DEFAULT_MODEL)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_heartbeat_lines_off_a_terminal_even_during_a_long_step(monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.05)
    s = io.StringIO()
    with Progress(3, "phase", stream=s) as bar:
        bar.update(1, "item0")
        time.sleep(0.3)                                         # one long step: still heard from
        bar.update(2, "item2")
    lines = s.getvalue().splitlines()
    assert lines[0] == "phase: 0/3" and re.fullmatch(r"phase: 3/3 in \d+\.\d s", lines[-1])
    beats = lines[1:-1]
    assert len(beats) >= 2 and all(re.fullmatch(r"phase: [123]/3 \(last: item[02]\), \d+ s", b) for b in beats)


def test_bar_on_a_terminal_reaches_its_total_and_silence_when_off(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)          # the built-in bar
    s = Terminal()
    with Progress(4, "phase", stream=s) as bar:
        for _ in range(4):
            bar.update()
    drawn = [p for p in s.getvalue().split("\r") if p.strip()]
    assert "4/4" in drawn[-1] and "0/4" in drawn[0]
    quiet = Terminal()
    with Progress(4, "phase", enabled=False, stream=quiet) as bar:
        bar.update(4)
    assert quiet.getvalue() == ""


def test_tqdm_draws_the_bar_when_installed():
    pytest.importorskip("tqdm")
    s = Terminal()
    with Progress(3, "phase", stream=s) as bar:
        bar.update(3, "last")
        assert bar._tqdm is not None and bar._tqdm.n == 3
    assert "phase" in s.getvalue()


def test_layer_fitting_counts_in_order_to_the_total(monkeypatch, capsys):
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.01)
    net = randomize(build("resnet18-paper", 1, 10))
    x = np.random.default_rng(0).integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
    res = tabconv_np.convert(net, x, n_codebooks="D/64", n_prototypes=4, iters=1, mask_rate=20,
                             switches=[0] + [1] * 8 + [0])
    assert "downsample.0(" in res.summary()                  # layers named within their switch
    err = capsys.readouterr().err.splitlines()
    for phase in ("fitting layers", "fitting again after masking"):
        counts = [tuple(map(int, m.groups())) for line in err if line.startswith(phase)
                  for m in [re.search(r": (\d+)/(\d+)", line)]]
        done = [n for n, _ in counts]
        assert done == sorted(done) and done[0] == 0 and done[-1] == counts[0][1] > 0, (phase, counts)


@pytest.mark.skipif(not os.path.exists(DEMO_MODEL), reason="demo weights not present")
def test_demo_speaks_first_and_while_timing(capsys):
    r = demo.run_demos(("maddness",), calib=20, test=10, max_rows=2000)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("tabconv demo: maddness on the shipped ResNet-18")
    assert any(line.startswith("timing batch 1 and 32") and "12/12" in line for line in err)
    text = demo.format_reports(r)
    assert "None" not in text and "{" not in text and not re.search(r"[-\u2212]\d", text)   # no negative %
    assert "% fewer operations (paper convention: encoding not counted" in text
    assert "x the float32 weights" in text and re.search(r"\d+ Numba and \d+ BLAS thread", text)


def test_plain_numbers():
    assert compared(1.55, 32.71, "operations") == "95.3% fewer operations"
    assert compared(157.0, 32.8, "arithmetic operations") == "4.8x more arithmetic operations"
    assert size_ratio(167.2, 42.6) == "3.9x larger than the float32 weights"
    assert size_ratio(19.6, 42.6) == "0.46x the float32 weights"
    assert format_setting({"layer1.*": "D/28", "*": 256}) == "layer1.*=D/28,*=256"
    assert demo.parse_setting(format_setting({"layer1.*": "D/28", "*": 256}), str) == {"layer1.*": "D/28", "*": 256}
