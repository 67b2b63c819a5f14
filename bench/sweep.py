"""One conversion method over a grid of settings on a shipped network: accuracy, operations, storage, time.

Usage::

    python bench/sweep.py --network resnet18-paper_fashion-mnist --method lcnn \\
        --grid atoms=8,16,32,64,128 --grid sparsity=1,2,3 --grid refine=none,exact \\
        --set switches=0,1,1,1,1,1,1,1,1,0 [--calib 1000] [--batches 1,32] [--threads 1]
        [--repeats 7] [--out docs/sweep_lcnn_resnet18.md] [--cache-dir bench/_cache]

Every point of the grid (the product of the ``--grid`` values, with the
``--set`` settings added) is one ``convert(net, calibration, method=...,
**settings)`` of ``weights/<network>.h5`` on ``--calib`` seeded training
images; the result is evaluated on the shipped test sample (Fashion-MNIST: the
1,000 ``sample`` test images; MNIST: the subset's 1,000 test images).  Each
point is cached in ``--cache-dir`` (the converted network and its figures,
keyed by the weights' sha256, the method, the settings and the calibration
size), so an interrupted sweep resumes where it stopped and ``--batches``
can be timed later on a quiet machine without converting again.  A point
whose settings the method refuses for some layer (say ``atoms`` larger than a
layer's filter count) is reported with the project's error message.

Columns: accuracy, retention (accuracy / exact accuracy), the operations of
the ``macs`` quantity (a LCNN or RSDTR multiply is one MAC: this is the
multiplication count the LCNN paper reports), the ``full`` convention
(every arithmetic operation, ``tabconv_np.ops``), storage, conversion time,
and, per batch size, the median time of ``--repeats`` interleaved samples of
the converted and the exact network (both through ``tabconv_np.prepare``)
as a ratio (< 1: faster), ``--threads`` threads.  ``--batches ''`` skips
the timing.
"""
import argparse
import hashlib
import itertools
import json
import os
import shlex
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from methods import shipped_data  # noqa: E402
from tree_network import make_cache_dir, write_text_atomic  # noqa: E402
from tabconv_np.timing import time_round_robin  # noqa: E402


def _value(text):
    """A setting's value from the command line: none, an int, a float, a comma list of those, or text."""
    if "," in text:
        return [_value(t) for t in text.split(",")]
    if text.lower() in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _pairs(parser, items, what):
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"{what}: NAME=VALUE expected, got {item!r}")
        out[key] = value
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", required=True, help="a shipped network: weights/<network>.h5")
    p.add_argument("--method", required=True)
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="values of one setting; separated by ';' when they are lists themselves")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--calib", type=int, default=1000)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=None, help="markdown file (default: print)")
    p.add_argument("--cache-dir", default=os.path.join(ROOT, "bench", "_cache"))
    a = p.parse_args(argv)
    a.grid = {k: [_value(v) for v in vs.split(";" if ";" in vs else ",")]
              for k, vs in _pairs(p, a.grid, "--grid").items()}
    a.fixed = {k: _value(v) for k, v in _pairs(p, a.set, "--set").items()}
    try:
        a.batch_list = [int(b) for b in a.batches.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batches: comma-separated integers, got {a.batches!r}")
    a.weights = os.path.join(ROOT, "weights", a.network + ".h5")
    if not os.path.isfile(a.weights):
        p.error(f"--network: no file {a.weights}")
    return a


def points(grid):
    """The grid's settings dicts, in the order of the product of its value lists."""
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


def convert_point(net, xc, xt, yt, exact_pred, settings, args, log):
    """``(figures, converted network path or None)`` of one grid point, from the cache when there."""
    import numpy as np
    import tabconv_np
    from tabconv_np.conversion import convert
    from tabconv_np.errors import TabConvError
    from tabconv_np.ops import CONVENTIONS, count_ops
    key = hashlib.sha256(json.dumps([args.weights_digest, args.method, settings, args.calib],
                                    sort_keys=True).encode()).hexdigest()[:16]
    stem = os.path.join(args.cache_dir, f"sweep_{args.network}_{args.method}_{key}")
    if os.path.exists(stem + ".json"):
        with open(stem + ".json") as f:
            fig = json.load(f)
        return fig, (stem + ".h5" if os.path.exists(stem + ".h5") else None)
    t0 = time.perf_counter()
    try:
        res = convert(net, xc, method=args.method, progress=False, **settings)
    except TabConvError as e:
        fig = {"error": str(e)}
    else:
        pred = res.network.predict(xt).argmax(1)
        t = count_ops(res.network).total
        fig = {"accuracy": float(np.mean(pred == yt)), "agreement": float(np.mean(pred == exact_pred)),
               "macs": int(t["macs"]), "full": int(CONVENTIONS["full"].cost(t)),
               "storage_bytes": int(t["storage_bytes"]), "seconds": time.perf_counter() - t0}
        make_cache_dir(args.cache_dir)
        tabconv_np.save(res.network, stem + ".h5", overwrite=True)
    make_cache_dir(args.cache_dir)
    write_text_atomic(stem + ".json", json.dumps(fig))
    log(f"{settings}: " + (fig.get("error") or f"{fig['accuracy']:.2%} in {fig['seconds']:.0f} s"))
    return fig, (stem + ".h5" if "error" not in fig else None)


def main(args):
    import warnings

    import numpy as np
    import tabconv_np
    from tabconv_np.compare import file_digest
    from tabconv_np.ops import CONVENTIONS, count_ops
    tabconv_np.set_num_threads(args.threads)
    log = lambda s: print(s, file=sys.stderr, flush=True)          # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = tabconv_np.load(args.weights)
    args.weights_digest = file_digest(args.weights)          # once: part of every point's cache key
    xc, xt, yt, source = shipped_data(net, args.calib)
    exact_pred = net.predict(xt).argmax(1)
    exact_acc = float(np.mean(exact_pred == yt))
    rows = [(p, *convert_point(net, xc, xt, yt, exact_pred, dict(args.fixed, **p), args, log))
            for p in points(args.grid)]
    ratios = {b: {} for b in args.batch_list}
    if args.batch_list:
        plans = {"exact": tabconv_np.prepare(net)}
        for i, (_, _, path) in enumerate(rows):
            if path:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    plans[i] = tabconv_np.prepare(tabconv_np.load(path))
        rng = np.random.default_rng(0)
        for b in args.batch_list:
            x = net.normalize(xt[rng.choice(len(xt), b, replace=False)])
            t = time_round_robin({k: (lambda p: lambda: p(x))(p) for k, p in plans.items()},
                                 args.repeats, warmup=1, min_sample=0.05, pause=0.0)
            ratios[b] = {k: t[k]["median"] / t["exact"]["median"] for k in t}
    exact_t = count_ops(net).total
    command = shlex.join(["python", "bench/sweep.py"] + sys.argv[1:])
    L = [f"Generated by `{command}`: `{args.method}` on `weights/{args.network}.h5`, calibrated on "
         f"{args.calib} seeded training images, evaluated on {len(yt)} images of {source}; exact "
         f"network {exact_acc:.2%}, {exact_t['macs'] / 1e6:.2f} M MACs, "
         f"{CONVENTIONS['full'].cost(exact_t) / 1e6:.2f} M operations (full convention), "
         f"{exact_t['storage_bytes'] / 2 ** 20:.2f} MiB. Settings common to every row: "
         f"{', '.join(f'{k}={v}' for k, v in args.fixed.items()) or 'none'}. "
         + (f"Time: median of {args.repeats} interleaved samples through `tabconv_np.prepare`, ratio to "
            f"the exact network in the same run, {args.threads} thread(s)." if args.batch_list else ""), "",
         "| " + " | ".join(list(args.grid) + ["accuracy", "retention", "agreement", "MACs (M)",
                                              "full ops (M)", "storage (MiB)", "conversion s"]
                         + [f"time b{b} / exact" for b in args.batch_list]) + " |",
         "|" + "---|" * len(args.grid) + "---:|" * (7 + len(args.batch_list))]
    for i, (p, fig, _) in enumerate(rows):
        cells = [str(v) for v in p.values()]
        if "error" in fig:
            cells += [f"refused: {fig['error']}"] + [""] * (6 + len(args.batch_list))
        else:
            cells += [f"{fig['accuracy']:.2%}", f"{fig['accuracy'] / exact_acc:.3f}", f"{fig['agreement']:.3f}",
                      f"{fig['macs'] / 1e6:.2f}", f"{fig['full'] / 1e6:.2f}",
                      f"{fig['storage_bytes'] / 2 ** 20:.2f}", f"{fig['seconds']:.0f}"]
            cells += [f"{ratios[b][i]:.2f}" for b in args.batch_list]
        L.append("| " + " | ".join(cells) + " |")
    text = "\n".join(L) + "\n"
    if args.out:
        write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main(parse_args())
