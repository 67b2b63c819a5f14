"""Where the exact engine's time goes, layer by layer, beside onnxruntime's own profile.

Usage::

    python bench/profile_layers.py [--models resnet18,nin] [--batches 1,32] [--threads 1]
                                   [--repeats 7] [--out docs/bench_profile.md]

For each model (the shipped weight files of bench/engines.py; ``resnet18-224``:
the ImageNet-shaped ResNet-18 with random weights) and batch size, in this
process at ``--threads`` threads (BLAS, Numba and onnxruntime):

* the tuned plan (``tabconv_np.prepare(net, batch=B)``, as bench/engines.py's
  ``plan_tuned``) runs ``--repeats`` times with every prepared convolution
  timed in place (its ``__call__``); the rest of the forward pass (pooling,
  the classifier, NHWC conversion at the edges, the Python between steps) is
  the whole time minus the convolutions';
* each convolution is then replayed on the input it received, part by part,
  medians of ``--repeats``: the lowering (im2col's ``lower_gijc``, or
  Winograd's padding and input transform), the product (one BLAS GEMM, or
  Winograd's batched products), the epilogue (bias + residual + clamp, with
  Winograd's output transform); "glue" is the step's time minus its parts
  (Python, allocation, chunking);
* onnxruntime runs the same network (exported as bench/engines.py does) with
  profiling on; its per-node kernel times are medians over the same number
  of runs, and the convolutions are matched to ours in execution order.

Times are medians in microseconds per batch; the machine and thread counts
are stated in the report.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,nin")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--cache-dir", default=os.path.join(os.path.dirname(HERE), "bench", "_cache"))
    p.add_argument("--reconvert", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs", "bench_profile.md"))
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:                         # BLAS reads its thread count when numpy loads
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

from engines import ENGINE_MODELS, load_model, onnx_model  # noqa: E402
from tree_network import _ints, cpu_model, make_cache_dir, time_round_robin, write_text_atomic  # noqa: E402


def _median_us(fn, repeats):
    return 1e6 * time_round_robin({"f": fn}, repeats, warmup=1, min_sample=0.002, pause=0.0)["f"]["median"]


def plan_profile(plan, x, repeats):
    """Per prepared conv, in execution order: (step, input, residual, [seconds per run]); and the
    whole forward's median seconds."""
    from tabconv_np.plan import PreparedConv
    calls, order = {}, []
    original = PreparedConv.__call__

    def timed(self, xin, residual=None):
        t0 = time.perf_counter()
        y = original(self, xin, residual)
        dt = time.perf_counter() - t0
        if id(self) not in calls:
            calls[id(self)] = (self, xin.copy(), None if residual is None else residual.copy(), [])
            order.append(id(self))
        calls[id(self)][3].append(dt)
        return y

    plan(x)
    whole = []
    PreparedConv.__call__ = timed
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            plan(x)
            whole.append(time.perf_counter() - t0)
    finally:
        PreparedConv.__call__ = original
    return [calls[k] for k in order], statistics.median(whole)


def parts_us(step, x, residual, repeats):
    """Medians (us) of a prepared conv's lowering, product and epilogue, replayed on ``x``."""
    from tabconv_np.conv import winograd as wg
    from tabconv_np.functional import WINOGRAD_TILES
    from tabconv_np.kernels.im2col_kernels import lower_gijc
    N = len(x)
    C_out, Ho, Wo = step.out_shape
    if step.method in WINOGRAD_TILES:
        m = WINOGRAD_TILES[step.method]
        V = wg.input_tiles(x, m, step.padding, (Ho, Wo))
        M = wg.tile_products(V, step.U)

        def epilogue():
            y = wg.output_tiles(M, m, N, (Ho, Wo), step.bias)
            step._epilogue(y.reshape(-1, C_out), np.zeros(C_out, np.float32), residual)
        return (_median_us(lambda: wg.input_tiles(x, m, step.padding, (Ho, Wo)), repeats),
                _median_us(lambda: wg.tile_products(V, step.U), repeats), _median_us(epilogue, repeats))
    y = np.empty((N * Ho * Wo, C_out), np.float32)
    if step.pointwise:
        sh, sw = step.stride
        rows = np.ascontiguousarray(x[:, :Ho * sh:sh, :Wo * sw:sw]).reshape(N * Ho * Wo, -1)
        lower = (lambda: np.ascontiguousarray(x[:, :Ho * sh:sh, :Wo * sw:sw])) if (sh, sw) != (1, 1) else None
    else:
        rows = np.empty((N * Ho * Wo, step.wmat.shape[0]), np.float32)

        def lower():
            lower_gijc.pick(rows.size)(x, *step.args, rows)
        lower()
    return (0.0 if lower is None else _median_us(lower, repeats),
            _median_us(lambda: np.matmul(rows, step.wmat, out=y), repeats),
            _median_us(lambda: step._epilogue(y, step.bias, residual), repeats))


def ort_profile(path, x, threads, repeats):
    """onnxruntime's per-node kernel times: [(node, op, median us)] in execution order, and the
    median wall time (us) of a whole run."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(2):
            sess.run(None, {"x": x})
        wall = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, {"x": x})
            wall.append(time.perf_counter() - t0)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    per, ops = {}, {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][:-len("_kernel_time")]
            per.setdefault(name, []).append(e["dur"])
            ops[name] = e["args"].get("op_name", "?")
    # the last `repeats` runs of each node (the first two are warm-up)
    return ([(n, ops[n], statistics.median(v[-repeats:])) for n, v in per.items()],
            1e6 * statistics.median(wall))


def conv_names(net):
    """Names of the groups-1 convolutions in creation order of the plan's prepared steps."""
    from tabconv_np.layers import Conv2d
    return [(n, m) for n, m in net.body.modules() if isinstance(m, Conv2d) and m.groups == 1]


def model_section(name, args):
    import tabconv_np
    from tabconv_np.fold import fold_batchnorm
    net = load_model(name)
    make_cache_dir(args.cache_dir)
    onnx_path, why = onnx_model(name, net, args)
    folded = fold_batchnorm(net)
    named = conv_names(folded)
    L = [f"## {name} ({' x '.join(map(str, net.input_shape))})", ""]
    for B in _ints(argparse.ArgumentParser(), args.batches, "--batches"):
        x = np.random.default_rng(0).standard_normal((B,) + tuple(net.input_shape)).astype(np.float32)
        plan = tabconv_np.prepare(net, batch=B)
        label = {id(s): n for (n, m), s in zip(named, plan.prepared)
                 if s.in_shape[0] == m.in_channels and s.out_shape[0] == m.out_channels}
        steps, whole = plan_profile(plan, x, args.repeats)
        ort_nodes, ort_wall = ort_profile(onnx_path, x, args.threads, args.repeats) if onnx_path else ([], None)
        ort_convs = [(n, t) for n, op, t in ort_nodes if op in ("Conv", "FusedConv")]
        matched = len(ort_convs) == len(steps)
        L += [f"### batch {B}", "",
              "| conv | method | MMAC | step us | lowering | product | epilogue | glue | GMAC/s | "
              "onnxruntime us | x/ORT |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        tot = dict(step=0.0, low=0.0, prod=0.0, epi=0.0, ort=0.0)
        for i, (step, xin, res, times) in enumerate(steps):
            t = 1e6 * statistics.median(times)
            low, prod, epi = parts_us(step, xin, res, args.repeats)
            C_out, Ho, Wo = step.out_shape
            macs = B * Ho * Wo * C_out * step.wmat.shape[0]
            o = ort_convs[i][1] if matched else None
            for k, v in (("step", t), ("low", low), ("prod", prod), ("epi", epi), ("ort", o or 0.0)):
                tot[k] += v
            L.append(f"| {label.get(id(step), f'conv #{i}')} | {step.method} | {macs / 1e6:.1f} | {t:.0f} | "
                     f"{low:.0f} | {prod:.0f} | {epi:.0f} | {t - low - prod - epi:.0f} | "
                     f"{macs / t / 1e3:.1f} | " + (f"{o:.0f} | {t / o:.2f} |" if o else "– | – |"))
        w = 1e6 * whole
        L.append(f"| **convs** | | | {tot['step']:.0f} | {tot['low']:.0f} | {tot['prod']:.0f} | "
                 f"{tot['epi']:.0f} | {tot['step'] - tot['low'] - tot['prod'] - tot['epi']:.0f} | | "
                 + (f"{tot['ort']:.0f} | {tot['step'] / tot['ort']:.2f} |" if matched else "– | – |"))
        ort_other = sum(t for n, op, t in ort_nodes if op not in ("Conv", "FusedConv"))
        L += ["", f"Whole forward: plan {w:.0f} us, of which convolutions {tot['step']:.0f} and the rest "
              f"(other layers, edges, Python between steps) {w - tot['step']:.0f}."]
        if ort_wall:
            L.append(f"onnxruntime: {ort_wall:.0f} us per run, of which Conv nodes {tot['ort'] if matched else sum(t for _, t in ort_convs):.0f}, "
                     f"other nodes {ort_other:.0f} ({', '.join(sorted({op for _, op, _ in ort_nodes if op not in ('Conv', 'FusedConv')}))}), "
                     f"session overhead {ort_wall - sum(t for _, _, t in ort_nodes):.0f}. Plan / onnxruntime: {w / ort_wall:.2f}.")
        else:
            L.append(f"onnxruntime: not run ({why}).")
        if onnx_path and not matched:
            L.append(f"(onnxruntime has {len(ort_convs)} Conv nodes, the plan {len(steps)} prepared convolutions: "
                     "not matched row by row.)")
        L.append("")
        print("\n".join(L[-6:]), file=sys.stderr, flush=True)
    return L


def main(args):
    import numba
    import tabconv_np
    tabconv_np.set_num_threads(args.threads)
    t0 = time.time()
    L = ["# Where the time goes: the exact plan per layer beside onnxruntime's profile", "",
         f"Generated by `python bench/profile_layers.py --models {args.models} --batches {args.batches} "
         f"--threads {args.threads} --repeats {args.repeats}` on {cpu_model()} ({os.cpu_count()} cores), "
         f"{args.threads} thread(s) for BLAS, Numba and onnxruntime; Python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}.", "",
         "Per convolution of the tuned plan (`prepare(net, batch=B)`): the step's median time in a full forward, "
         "and its parts replayed alone on the same input (medians): lowering (im2col rows, or Winograd's padding "
         "and input transform), product (BLAS GEMM, or Winograd's batched products), epilogue (bias + residual + "
         "clamp, with Winograd's output transform); glue = step - parts (Python, allocation, chunking; "
         "negative when a part alone ran slower than inside the step). onnxruntime: its profiler's kernel time of "
         "the matching node (execution order; its Conv nodes include the fused ReLU, and the residual Add where "
         "it fuses it).", ""]
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in ENGINE_MODELS:
            raise SystemExit(f"--models: choose from {', '.join(ENGINE_MODELS)}, got {name!r}")
        L += model_section(name, args)
    L.append(f"Wall time of this report: {time.time() - t0:.0f} s.")
    text = "\n".join(L) + "\n"
    print(text)
    if args.out:
        write_text_atomic(args.out, text)


if __name__ == "__main__":
    main(ARGS)
