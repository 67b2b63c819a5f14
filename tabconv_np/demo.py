"""TabConv end to end on the shipped model: the library side of ``tabconv demo``.

:func:`run_demo` loads ``weights/resnet18-paper_fashion-mnist.h5``, converts
it to a table network on the 1000 shipped Fashion-MNIST *training* images (the
calibration sample), and compares exact and table accuracy on the 1000
shipped *test* images, with the operation reduction under both conventions
(see :func:`tabconv_np.ops.op_reduction`), storage and latency;
:func:`format_report` writes its text report::

    tabconv demo            # text report
    tabconv demo --json     # one JSON object

(the command lines are in :mod:`tabconv_np.cli.demo` and
:mod:`tabconv_np.cli.convert`; ``python -m tabconv_np.demo`` is ``tabconv demo``).

This module imports nothing heavy at load time (the CLI imports it to build
its parser): the conversion, and with it Numba, loads when :func:`run_demo`
runs.
"""
import os
import time

import numpy as np

from .data import load_dataset
from .errors import ConfigError, WeightFileError
from .io import load
from .outputs import check_output
from .plan import prepare
from .progress import Progress, say
from .report import command_line, reduction_lines
from .validate import as_int

#: The default demo model, relative to the repository root.
DEFAULT_MODEL = os.path.join("weights", "resnet18-paper_fashion-mnist.h5")

#: Default conversion of the demo (ResNet-18 "paper", 1x28x28), tuned on
#: Fashion-MNIST *test* images outside the shipped test sample (the first 3000
#: of the full test set; docs/results.md).  Every BasicBlock is a table; the
#: stem (D = 9, 0.35% of the MACs) and the classifier (0.02%) stay exact, the
#: classifier refit on the table features.  Subspaces of about 28 columns in
#: stages 1-2 (many rows per image, errors that propagate furthest) and 128 in
#: stages 3-4 (few rows), 16 in the cheap 1x1 shortcut convs: 95.3% fewer
#: operations in the paper's convention.  K = 1024 prototypes in stage 1,
#: 256 elsewhere.  Tables refined by least squares toward the exact network
#: (``refine="exact"``; the authors' plain PQ tables: ``refine=None``).
DEMO_SETTINGS = {
    "codebooks": {"*.downsample.*": "D/16", "layer1.*": "D/28", "layer2.*": "D/28",
                  "layer3.*": "D/128", "layer4.*": "D/128"},
    "prototypes": {"layer1.*": 1024, "*": 256},
    "switches": [0, 1, 1, 1, 1, 1, 1, 1, 1, 0],
    "mask_rate": None, "refine": "exact", "max_rows": 20_000, "iters": 4}


def repo_root():
    """The directory holding ``tabconv_np/`` (the repository root in a checkout)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_model(path=None):
    """``path`` if given, else the shipped demo model; TabConvError when it is missing."""
    p = path or os.path.join(repo_root(), DEFAULT_MODEL)
    if not os.path.exists(p):
        raise WeightFileError(f"{p}: no such file; the demo needs the trained ResNet-18 "
                              f"({DEFAULT_MODEL} in the repository) or --model PATH")
    return p


def parse_setting(text, kind):
    """A per-layer setting from the command line.

    ``"8"`` -> 8, ``"D/32"`` -> "D/32", ``"auto"`` -> "auto" (str kinds), ``"4,8,D/32"`` -> [4, 8, "D/32"] (one
    per switch), ``"layer1.*=D/28,*=D/48"`` -> {"layer1.*": "D/28", "*": "D/48"}
    (keys: layer paths, switch names or glob patterns; see ``convert``).
    """
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if any("=" in p for p in parts):
        out = {}
        for p in parts:
            key, sep, val = p.partition("=")
            if not sep:
                raise ConfigError(f"expected KEY=VALUE items, got {p!r} in {text!r}")
            out[key.strip()] = parse_setting(val.strip(), kind)
        return out
    vals = []
    for p in parts:
        if kind is float:
            try:
                vals.append(float(p))
                continue
            except ValueError:
                raise ConfigError(f"expected a number, got {p!r}") from None
        if kind is not int and p.lower() == "auto":
            vals.append("auto")
            continue
        if kind is int or not p.lower().startswith("d/"):
            try:
                vals.append(int(p))
                continue
            except ValueError:
                raise ConfigError(f"expected an int{' or D/<ds>' if kind is not int else ''}, "
                                  f"got {p!r}") from None
        vals.append(p)
    return vals[0] if len(vals) == 1 else vals


def accuracy(net, images, labels, batch=250):
    """Top-1 accuracy of ``net`` and the seconds ``predict`` took."""
    t0 = time.perf_counter()
    logits = net.predict(images, batch=batch)
    dt = time.perf_counter() - t0
    return float(np.mean(logits.argmax(1) == labels)), dt


#: The fast conversion of the demo: hash-tree encoding with 8-bit tables
#: (``method="maddness"``), one codebook per input channel's 3x3 window (per 4
#: channels in the 1x1 shortcut convs), tables fitted to the exact network's
#: outputs; the stem and the classifier stay exact, as in DEMO_SETTINGS.
FAST_SETTINGS = {"codebooks": "auto", "switches": [0, 1, 1, 1, 1, 1, 1, 1, 1, 0], "mask_rate": None,
                 "refine": "exact", "max_rows": 20_000}

#: What ``tabconv demo`` runs: the fast setting, reported beside the paper-faithful one.
METHODS = {"maddness": FAST_SETTINGS, "tabconv": DEMO_SETTINGS}


def _seconds(net, images):
    t0 = time.perf_counter()
    net.predict(images)
    return time.perf_counter() - t0


def speedups(exact, converted, images, repeats=5, progress=None):
    """``{"batch1": ..., "batch32": ...}``: exact time / converted time, medians of ``repeats``
    interleaved calls after one warm-up call each; and the times in ms.

    ``progress``: the ``enabled`` of a :class:`~tabconv_np.progress.Progress` over the
    ``2 * (repeats + 1)`` pairs of calls.
    """
    out, ms = {}, {}
    with Progress(2 * (repeats + 1), "timing batch 1 and 32, exact and table interleaved",
                  enabled=progress) as bar:
        for b in (1, 32):
            x = images[:b]
            pairs = []
            for i in range(repeats + 1):
                pair = (_seconds(exact, x), _seconds(converted, x))
                pairs += [pair] if i else []                 # the first pair warms up
                bar.update(1, f"batch {b}")
            te, tc = (float(np.median(t)) for t in zip(*pairs))
            out[f"batch{b}"] = te / tc
            ms[f"batch{b}"] = {"exact": 1e3 * te, "table": 1e3 * tc}
    return out, ms


def run_demo(model=None, calib=1000, test=1000, codebooks=None, prototypes=None, switches=None,
             mask_rate=None, seed=0, progress=None, max_rows=None, iters=None, calibrate="approx",
             latency=True, refine="default", method="tabconv", save=None, overwrite=False):
    """Convert the demo model with one method and measure it; returns the report dict.

    Parameters mirror :func:`tabconv_np.conversion.convert`; ``None`` takes the
    value of the method's defaults (``METHODS[method]``: ``DEMO_SETTINGS`` for
    "tabconv", ``FAST_SETTINGS`` for "maddness").  ``calib`` / ``test``: how
    many of the shipped sample's training / test images to use (at most 1000
    each).  ``latency``: measure batch-1 and batch-32 wall clock against the
    exact network in the same run (``speedup``).  ``save``: write the
    converted network to this HDF5 path (``overwrite``: replacing a file there).
    """
    # imported here, not at the top: convert loads Numba and SciPy, which the CLI would
    # pay for on every command (it imports this module to build its parser)
    from .conversion import convert, op_reduction
    from .io import save as save_network
    if method not in METHODS:
        raise ConfigError(f"demo: method must be one of {sorted(METHODS)}, got {method!r}")
    as_int(calib, "demo: calib (calibration images)", 2, 1000)
    as_int(test, "demo: test (test images)", 1, 1000)
    if save:
        check_output(save, overwrite=overwrite)
    t0 = time.perf_counter()
    path = find_model(model)
    say(f"{method}: loading {os.path.relpath(path)} and the shipped sample, compiling kernels", progress)
    net = load(path)
    xc, _ = load_dataset("sample", "train", limit=calib)
    xt, yt = load_dataset("sample", "test", limit=test)
    defaults = METHODS[method]
    opts = {}
    for k, v in (("codebooks", codebooks), ("prototypes", prototypes), ("switches", switches),
                 ("mask_rate", mask_rate), ("max_rows", max_rows), ("iters", iters)):
        v = defaults.get(k) if v is None else v
        if v is not None:
            opts[k] = v
    opts["refine"] = defaults["refine"] if refine == "default" else refine
    res = convert(net, xc, method=method, seed=seed, progress=progress, calibrate=calibrate, **opts)
    with Progress(2, f"accuracy of the exact and the table network ({len(xt)} test images)",
                  enabled=progress) as bar:
        exact_acc, exact_s = accuracy(res.exact, xt, yt)
        bar.update(1, "exact")
        both = res.accuracies(xt, yt)
        bar.update(1, "table")
    table_acc, table_s, norefit_acc = both["table"], both["seconds"], both["without_refit"]
    red = op_reduction(res.network, res.exact)
    if save:
        save_network(res.network, save, overwrite=overwrite)
    out = {
        "method": method,
        "model": os.path.relpath(path) if not os.path.isabs(model or "") else path,
        "arch": net.meta.get("arch"), "dataset": net.meta.get("dataset"),
        "calibration_images": int(len(xc)), "test_images": int(len(xt)),
        "settings": {k: v for k, v in opts.items()},
        "switches": res.switches, "on": [int(v) for v in res.on], "masked": res.masked,
        "layers": [{k: r[k] for k in ("name", "D", "C", "K", "rows", "rows_used", "rel_error") if k in r}
                   for r in res.layers],
        "exact_accuracy": exact_acc, "table_accuracy": table_acc,
        "retention": table_acc / exact_acc if exact_acc else 0.0,
        "table_accuracy_without_refit": norefit_acc,
        "op_reduction": {k: red[k]["reduction"] for k in ("paper", "full", "bolt")},
        "ops": {k: {kk: red[k][kk] for kk in ("cost", "exact", "convention")} for k in ("paper", "full", "bolt")},
        "storage_bytes": red["storage"]["network_bytes"],
        "weights_bytes": red["storage"]["exact_network_bytes"],
        "storage": red["storage"],
        "conversion_seconds": res.seconds,
        "throughput": {"exact_ms_per_image": 1e3 * exact_s / len(xt),
                       "table_ms_per_image": 1e3 * table_s / len(xt), "batch": 250},
        "notes": res.notes,
    }
    if save:
        out["saved"] = save
    if latency:
        from .threads import get_blas_threads, get_num_threads
        # both prepared (tabconv_np.prepare): the exact engine at its fastest is the baseline
        exact, table = res.exact.copy(), res.network.copy()
        prepare(exact, attach=True), prepare(table, attach=True)
        out["speedup"], out["latency_ms"] = speedups(exact, table, xt, progress=progress)
        out["threads"], out["blas_threads"] = get_num_threads(), get_blas_threads()
        out["latency_batch1_ms"] = out["latency_ms"]["batch1"]
    out["seconds"] = time.perf_counter() - t0
    return out


def format_report(r):
    """The text report of :func:`run_demo`'s dict (one method)."""
    opts = {"method": r["method"], **r["settings"]}
    exact = [n for n, o in zip(r["switches"], r["on"]) if not o and n not in r["masked"]]
    red = {"paper": r["ops"]["paper"], "full": r["ops"]["full"], "storage": r["storage"]}
    lines = [
        f"method     {r['method']}",
        f"model      {r['model']} ({r['arch']}, {r['dataset']})",
        f"data       calibration: {r['calibration_images']} shipped Fashion-MNIST training images; "
        f"test: {r['test_images']} shipped test images",
        f"settings   tabconv demo {command_line(opts)}",
        f"{'':<11}{sum(r['on'])} of {len(r['on'])} switches converted to tables"
        + (f"; kept exact: {', '.join(exact)}" if exact else "")
        + (f"; masked (kept exact by priority masking): {', '.join(r['masked'])}" if r["masked"] else ""),
        f"accuracy   exact {100 * r['exact_accuracy']:.2f}%   table {100 * r['table_accuracy']:.2f}%   "
        f"retention {100 * r['retention']:.1f}%"
        + (f"   (table without classifier refit: {100 * r['table_accuracy_without_refit']:.2f}%)"
           if r.get("table_accuracy_without_refit") is not None else ""),
        *reduction_lines(red),
    ]
    if "speedup" in r:
        lat = r["latency_ms"]
        lines.append(f"speed      {r['threads']} Numba and {r['blas_threads'] or 'no'} BLAS thread(s) "
                     f"(tabconv_np.set_num_threads); exact and table interleaved in one run, medians of 5 calls:")
        for b in ("batch1", "batch32"):
            e, t = lat[b]["exact"], lat[b]["table"]
            lines.append(f"{'':<11}{b[:5]} {b[5:]:>2}: exact {e:.2f} ms, table {t:.2f} ms: table "
                         + (f"{e / t:.2f}x faster" if t < e else f"{t / e:.2f}x slower"))
    lines.append(f"time       conversion {r['conversion_seconds']:.1f} s, this method {r['seconds']:.1f} s")
    return "\n".join(lines)


def run_demos(methods=("maddness", "tabconv"), save=None, overwrite=False, **kw):
    """:func:`run_demo` for each method (the fast one first); ``save`` writes the first one's network.

    Returns the first method's report with the others' under ``"compare"``
    (``{method: report}``): ``tabconv demo --json`` prints it.
    """
    say(f"tabconv demo: {' and '.join(methods)} on the shipped ResNet-18 (about 1-2 min per method on "
        f"2 cores; progress on stderr)", kw.get("progress"))
    reports = []
    for i, m in enumerate(methods):
        own = kw if m == "tabconv" else {k: v for k, v in kw.items() if k not in ("prototypes", "iters")}
        reports.append(run_demo(method=m, save=save if i == 0 else None, overwrite=overwrite, **own))
    out = dict(reports[0])
    if len(reports) > 1:
        out["compare"] = {r["method"]: r for r in reports[1:]}
    return out


def format_reports(r):
    """The text report of :func:`run_demos`: one block per method."""
    blocks = [format_report(r)] + [format_report(o) for o in r.get("compare", {}).values()]
    return "\n\n".join(blocks)


if __name__ == "__main__":  # pragma: no cover
    # runs only as ``python -m tabconv_np.demo`` (module ``__main__``); importing
    # tabconv_np.demo never imports the command line
    import sys

    from .cli import main
    sys.exit(main(["demo"] + sys.argv[1:]))
