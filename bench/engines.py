"""Whole-network wall clock of tabconv_np's exact engine against torch and onnxruntime.

Usage::

    python bench/engines.py [--models resnet18,resnet34,nin,resnet18-224]
                            [--batches 1,8,32,256] [--threads 1,2] [--repeats 7]
                            [--max-batch-224 8] [--out docs/bench_engines.md]
                            [--json docs/bench_engines.json]

For each model (the shipped ResNet-18 / ResNet-34 "paper" and NIN weight
files, Fashion-MNIST, 1x28x28; and ``resnet18-224``: the same ResNet-18
architecture at the ImageNet shape 3x224x224 with 1000 classes and seeded
random He-scaled weights, since only its speed matters) it times, in one fresh
subprocess per ``--threads`` value (BLAS, Numba, torch and onnxruntime threads
all set to it before anything is imported), a forward pass of a batch of
preprocessed float32 images through

* ``nchw``: the BN-folded tabconv_np network, each conv with its default
  method (``auto``), computing in NCHW;
* ``nhwc``: the same computing in NHWC (``net.layout = "NHWC"``; the input
  is still NCHW and converted once at the edge);
* ``plan``: ``tabconv_np.prepare(net)`` (BN folded, NHWC, weights
  pre-arranged, taps that read only padding dropped, epilogues fused);
* ``plan_tuned``: ``tabconv_np.prepare(net, batch=B)`` for the timed batch
  size B (each 3x3 stride-1 conv's method, im2col or Winograd, chosen by timing);
* ``torch``: the network's torch twin (``weights/models_torch.py``) under
  ``torch.inference_mode()``, when torch is installed;
* ``onnxruntime``: that twin exported to ONNX (opset 17, cached in
  ``bench/_cache``), CPU provider, all graph optimisations, sequential
  execution, ``intra_op_num_threads`` = threads, when onnxruntime is installed.

Timing is ``tree_network.time_round_robin``: warm-up calls, samples of at
least ``--min-sample`` seconds, ``--repeats`` round-robin rounds with the
first contender rotating; medians are reported with their ratio to
onnxruntime (x/ORT > 1: slower than onnxruntime) and, per batch and thread
count, the geometric mean of the plans' ratios over the models.  Batches larger
than ``--max-batch-224`` are skipped for ``resnet18-224`` (a batch of 256 at
224x224 is minutes per round on one core).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tree_network import (MODELS, ROOT, _ints, blas_info, cpu_model, export_onnx,  # noqa: E402
                          fmt_ms, make_cache_dir, time_round_robin, write_text_atomic)

#: The contenders, in table order.
CONTENDERS = ("nchw", "nhwc", "plan", "plan_tuned", "torch", "onnxruntime")
#: Model short names -> shipped weight file, or None for the random ImageNet-shaped ResNet-18.
ENGINE_MODELS = {"resnet18": MODELS["resnet18"], "resnet34": MODELS["resnet34"], "nin": MODELS["nin"],
                 "resnet18-224": None}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(ENGINE_MODELS), help=f"comma-separated: {', '.join(ENGINE_MODELS)}")
    p.add_argument("--batches", default="1,8,32,256", help="comma-separated batch sizes")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (one process each)")
    p.add_argument("--repeats", type=int, default=7, help="round-robin rounds (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per contender first")
    p.add_argument("--min-sample", type=float, default=0.05, help="seconds of calls per sample")
    p.add_argument("--pause", type=float, default=0.1, help="seconds of idle before each sample")
    p.add_argument("--max-batch-224", type=int, default=8, help="largest batch timed for resnet18-224")
    p.add_argument("--cache-dir", default=os.path.join(ROOT, "bench", "_cache"))
    p.add_argument("--reconvert", action="store_true", help="export the ONNX models again")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "bench_engines.md"), help="markdown ('' for none)")
    p.add_argument("--json", default=os.path.join(ROOT, "docs", "bench_engines.json"), help="numbers ('' for none)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker is None:
        a.batch_list = _ints(p, a.batches, "--batches")
        a.thread_list = _ints(p, a.threads, "--threads")
        a.model_list = [m.strip() for m in a.models.split(",") if m.strip()]
        bad = [m for m in a.model_list if m not in ENGINE_MODELS]
        if bad or not a.model_list:
            p.error(f"--models: choose from {', '.join(ENGINE_MODELS)}, got {a.models!r}")
    return a


def load_model(name):
    """The exact network of ``name`` (parameters loaded or seeded)."""
    import tabconv_np
    from tabconv_np.models import build, randomize
    if ENGINE_MODELS[name]:
        return tabconv_np.load(os.path.join(ROOT, "weights", ENGINE_MODELS[name]))
    return randomize(build("resnet18-paper", 3, 1000, input_size=224), seed=0)


def onnx_model(name, net, args):
    """``(path, None)`` of ``name``'s exact network exported to ONNX (cached in ``args.cache_dir``),
    or ``(None, reason)``."""
    sha = "random-seed0" if ENGINE_MODELS[name] is None else __import__("export").sha256(
        os.path.join(ROOT, "weights", ENGINE_MODELS[name]))
    stem = name if ENGINE_MODELS[name] is None else os.path.splitext(ENGINE_MODELS[name])[0]
    return export_onnx(stem, sha, net, args, lambda m: print(m, file=sys.stderr))


def worker_main(spec_path):
    """Timing subprocess: every model and batch at this process's thread count."""
    with open(spec_path) as f:
        spec = json.load(f)
    threads = spec["threads"]
    import numpy as np
    import tabconv_np
    from tabconv_np.fold import fold_batchnorm
    tabconv_np.set_num_threads(threads)
    notes, torch, ort = [], None, None
    try:
        import torch
        torch.set_num_threads(threads)
        sys.path.insert(0, os.path.join(ROOT, "weights"))
        from models_torch import torch_from_network
    except ImportError:
        notes.append("torch is not installed: no torch column")
    try:
        import onnxruntime as ort
    except ImportError:
        notes.append("onnxruntime is not installed: no onnxruntime column and no ratios")
    out = {"threads": threads, "models": {}, "notes": notes, "blas": blas_info()}
    for m in spec["models"]:
        net = fold_batchnorm(load_model(m["name"]))
        nhwc = net.copy()
        nhwc.layout = "NHWC"
        plan = tabconv_np.prepare(net)
        fns_all = {"nchw": net, "nhwc": nhwc, "plan": plan}
        if torch is not None:
            twin = torch_from_network(load_model(m["name"]))

            def run_torch(x, twin=twin):
                with torch.inference_mode():
                    return twin(torch.from_numpy(x)).numpy()
            fns_all["torch"] = run_torch
        if ort is not None and m["onnx"]:
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(m["onnx"], so, providers=["CPUExecutionProvider"])
            fns_all["onnxruntime"] = lambda x, s=sess: s.run(None, {"x": x})[0]
        res = {}
        rng = np.random.default_rng(1)
        for b in m["batches"]:
            x = rng.standard_normal((b,) + net.input_shape).astype(np.float32)
            fns_all["plan_tuned"] = tabconv_np.prepare(net, batch=b)
            ref = net(x)
            diff = {k: float(np.abs(np.asarray(f(x)) - ref).max()) for k, f in fns_all.items()}
            t = time_round_robin({k: (lambda f=f: f(x)) for k, f in fns_all.items()}, spec["repeats"],
                                 spec["warmup"], spec["min_sample"], spec["pause"])
            res[str(b)] = {"median_s": {k: v["median"] for k, v in t.items()}, "max_abs_diff_to_nchw": diff}
            print(f"  [threads {threads}] {m['name']} batch {b}: " + "  ".join(
                f"{k} {1e3 * v['median']:.2f} ms" for k, v in t.items()), file=sys.stderr, flush=True)
        out["models"][m["name"]] = res
    with open(spec["result"], "w") as f:
        json.dump(out, f)


def run_worker(threads, spec, tmpdir):
    spec = dict(spec, threads=threads, result=os.path.join(tmpdir, f"result_{threads}.json"))
    path = os.path.join(tmpdir, f"spec_{threads}.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads),
               **{v: str(threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    print(f"timing at {threads} thread(s) in a subprocess ...", file=sys.stderr, flush=True)
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", path], env=env)
    if r.returncode:
        sys.exit(f"engines: the timing subprocess ({threads} threads) failed with code {r.returncode}")
    with open(spec["result"]) as f:
        return json.load(f)


def markdown(report, args):
    import numpy as np
    L = ["# The exact engine against torch and onnxruntime: whole-network wall clock", "",
         "Generated by `bench/engines.py` (its docstring says what is measured and how). Median ms per "
         "forward pass of the whole batch; x/ORT = time / onnxruntime's time in the same process "
         "(> 1: slower than onnxruntime).", "",
         f"- machine: {report['machine']['CPU']}, {report['machine']['cores']} cores; BLAS: {report['machine']['BLAS']}",
         f"- command: `{report['command']}`; wall time {report['machine']['wall time']}; load average at "
         f"start / end {report['machine']['load']}"]
    L += [f"- note: {n}" for n in report["notes"]]
    L.append("")
    geo = {}
    for name, per_t in report["models"].items():
        L += [f"## {name}", "", "| batch | threads | " + " | ".join(f"{c} ms" for c in CONTENDERS)
              + " | nchw/ORT | nhwc/ORT | plan/ORT | tuned/ORT | tuned/torch |",
              "|---:|---:|" + "---:|" * (len(CONTENDERS) + 5)]
        for t in args.thread_list:
            for b, r in per_t[str(t)].items():
                med = r["median_s"]
                o, tt = med.get("onnxruntime"), med.get("torch")
                ratio = [f"{med[c] / o:.2f}" if o else "–" for c in ("nchw", "nhwc", "plan", "plan_tuned")]
                L.append(f"| {b} | {t} | " + " | ".join(fmt_ms(med.get(c)) for c in CONTENDERS)
                         + " | " + " | ".join(ratio) + (f" | {med['plan_tuned'] / tt:.2f} |" if tt else " | – |"))
                if o:
                    geo.setdefault((int(b), t), []).append((med["plan"] / o, med["plan_tuned"] / o))
        worst = max(max(r["max_abs_diff_to_nchw"].values()) for pt in per_t.values() for r in pt.values())
        L += ["", f"Largest difference of any contender's outputs to the nchw network's: {worst:.1e}.", ""]
    if geo:
        L += ["## Geometric mean over the models of plan / onnxruntime", "",
              "| batch | threads | models | plan/ORT | tuned plan/ORT | worst tuned plan/ORT |", "|---:|---:|---:|---:|---:|---:|"]
        for (b, t), v in sorted(geo.items()):
            g = np.exp(np.mean(np.log(np.array(v)), axis=0))
            L.append(f"| {b} | {t} | {len(v)} | {g[0]:.2f} | {g[1]:.2f} | {max(w[1] for w in v):.2f} |")
    return "\n".join(L) + "\n"


def main(args):
    import numpy as np
    t0, load0 = time.time(), "%.2f" % os.getloadavg()[0]
    specs, notes = [], []
    make_cache_dir(args.cache_dir)
    for name in args.model_list:
        onnx, why = onnx_model(name, load_model(name), args)
        if why:
            notes.append(f"{name}: {why}")
        batches = [b for b in args.batch_list if ENGINE_MODELS[name] or b <= args.max_batch_224]
        specs.append({"name": name, "onnx": onnx, "batches": batches})
    spec = {"models": specs, "repeats": args.repeats, "warmup": args.warmup,
            "min_sample": args.min_sample, "pause": args.pause}
    with tempfile.TemporaryDirectory(prefix="engines_") as tmp:
        workers = {t: run_worker(t, spec, tmp) for t in args.thread_list}
    report = {"command": "python bench/engines.py " + " ".join(sys.argv[1:]),
              "models": {m["name"]: {str(t): workers[t]["models"][m["name"]] for t in args.thread_list}
                         for m in specs},
              "notes": notes + sorted({n for w in workers.values() for n in w["notes"]}),
              "machine": {"CPU": cpu_model(), "cores": os.cpu_count(), "BLAS": workers[args.thread_list[0]]["blas"],
                          "wall time": f"{time.time() - t0:.0f} s",
                          "load": f"{load0} / {os.getloadavg()[0]:.2f}", "numpy": np.__version__}}
    md = markdown(report, args)
    print(md)
    if args.out:
        write_text_atomic(args.out, md)
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        worker_main(ARGS.worker)
    else:
        main(ARGS)
