"""Time every convolution method on the distinct conv layers of ResNet-18.

Usage::

    python bench/conv_layers.py [--threads 2] [--batch 1,32] [--repeat 7] [--quick]
                                [--variants cifar,paper] [--inputs 1x28x28,3x32x32]
                                [--methods im2col,mec,direct] [--no-compile] [--out FILE]

For each ResNet-18 variant ("cifar": 3x3 stride-1 stem, stages at strides
1, 2, 2, 2; "paper": 3x3 stride-2 stem, every stage starting at stride 2),
each input size and each batch size, every distinct conv shape (3x3 convs and
the 1x1 downsample convs) is timed with

* ``numpy``: a pure-NumPy im2col (``sliding_window_view`` + reshape copy)
  and one BLAS ``matmul``: the baseline every ratio is relative to;
* the package's methods (``tabconv_np.functional.conv2d(method=...)``);
* ``torch.nn.functional.conv2d`` when torch is installed, at the same thread
  count (``torch.set_num_threads``), as the second reference.  torch runs in
  a worker subprocess with libgomp's default settings (see ``TorchWorker``);
  its samples are taken in one block after the others';
* ``ort``: the same convolution as a one-node ONNX graph in onnxruntime
  (``intra_op_num_threads`` = threads, all graph optimisations), when onnx
  and onnxruntime are installed; in this process, interleaved with the others.

Each time is the median over ``--repeat`` samples, each sample averaging
enough calls to last >= 10 ms; the in-process methods' samples are
interleaved (round-robin), so bursts of other load hit them alike.  Summaries are geometric means over layers of
the per-layer time ratios.  The script also measures the JIT compile time of
each method cold (fresh ``NUMBA_CACHE_DIR``, in a subprocess) and loaded from
the cache, and lists the lowering workspace of im2col vs MEC per layer.

Output is a markdown report on stdout (and in ``--out FILE``).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="numba, BLAS and torch threads")
    p.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
    p.add_argument("--repeat", type=int, default=7, help="samples per timing (median)")
    p.add_argument("--quick", action="store_true",
                   help="3 samples, input 3x32x32 only, no compile-time subprocesses")
    p.add_argument("--variants", default="cifar,paper")
    p.add_argument("--inputs", default="1x28x28,3x32x32")
    p.add_argument("--methods", default="im2col,mec,direct")
    p.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"],
                   help="layout of the package's methods (numpy and torch stay NCHW)")
    p.add_argument("--no-compile", action="store_true", help="skip the JIT compile timing")
    p.add_argument("--no-grouped", action="store_true",
                   help="skip the grouped/depthwise convolution table")
    p.add_argument("--out", help="also write the markdown report here")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--note", action="append", default=[],
                   help="a line for the report's machine notes (repeatable)")
    a = p.parse_args(argv)
    if a.quick:
        a.repeat = min(a.repeat, 3)
        a.inputs = "3x32x32"
        a.no_compile = True
        a.no_grouped = True
    return a


ARGS = parse_args() if __name__ == "__main__" else None
#: GOMP_SPINCOUNT as the user gave it (None: libgomp's default)
USER_SPINCOUNT = os.environ.get("GOMP_SPINCOUNT")
if ARGS is not None:
    # BLAS reads its thread count when numpy is first imported
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

if ARGS is None or not ARGS.torch_worker:
    sys.path.insert(0, ROOT)
    from tabconv_np import functional as F  # noqa: E402


# ------------------------------------------------------------------ layers
def resnet18_convs(variant, in_shape):
    """Distinct conv layers of ResNet-18 as dicts (name, C, H, W, C_out, k, s, p, count)."""
    C, H, W = in_shape
    stem_s, strides = {"cifar": (1, (1, 2, 2, 2)), "paper": (2, (2, 2, 2, 2))}[variant]
    layers = []

    def add(name, C, H, W, C_out, k, s, p):
        key = (C, H, W, C_out, k, s, p)
        for L in layers:
            if L["key"] == key:
                L["count"] += 1
                L["name"] += "," + name
                return
        layers.append(dict(key=key, name=name, C=C, H=H, W=W, C_out=C_out, k=k, s=s, p=p, count=1))

    add("stem", C, H, W, 64, 3, stem_s, 1)
    H, W = F.conv_output_size((H, W), 3, stem_s, 1)
    c_in = 64
    for stage, (planes, s) in enumerate(zip((64, 128, 256, 512), strides), 1):
        for blk in range(2):
            st = s if blk == 0 else 1
            Ho, Wo = F.conv_output_size((H, W), 3, st, 1)
            add(f"l{stage}.{blk}.conv1", c_in, H, W, planes, 3, st, 1)
            add(f"l{stage}.{blk}.conv2", planes, Ho, Wo, planes, 3, 1, 1)
            if st != 1 or c_in != planes:
                add(f"l{stage}.{blk}.down", c_in, H, W, planes, 1, st, 0)
            c_in, H, W = planes, Ho, Wo
    for L in layers:
        if L["count"] > 1:        # "l1.0.conv1,l1.0.conv2,..." -> "l1.0.conv1 (x4)"
            L["name"] = L["name"].split(",")[0] + f" (x{L['count']})"
    return layers


# ------------------------------------------------------------ torch worker
# torch runs in its own process: torch and Numba would share one libgomp,
# which reads its spin policy once, at load.  The package sets
# GOMP_SPINCOUNT=1000 for Numba (tabconv_np/kernels/_jit.py), which would slow
# torch's oneDNN down; here each side runs with its own settings (torch with
# the user's environment, i.e. libgomp's defaults).  torch's samples are taken
# in one block after the others', after a pause that lets this process's
# OpenBLAS threads stop busy-waiting (they would steal a core from torch).

def torch_worker_main(threads):
    """Serve timing requests (JSON lines on stdin) with torch.nn.functional.conv2d."""
    import torch
    torch.set_num_threads(threads)
    # warm the process up (thread pool, oneDNN, allocator) for ~1 s
    with torch.inference_mode():
        x, w = torch.randn(8, 64, 32, 32), torch.randn(64, 64, 3, 3)
        t_end = time.perf_counter() + 1.0
        while time.perf_counter() < t_end:
            torch.nn.functional.conv2d(x, w, None, 1, 1)
    cases = {}
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "setup":
            cases.clear()                       # one case at a time
            g = torch.Generator().manual_seed(0)
            x = torch.randn(req["x"], generator=g)
            w = torch.randn(req["w"], generator=g)
            s, p, groups = req["stride"], req["padding"], req.get("groups", 1)
            fn = (lambda x=x, w=w, s=s, p=p, groups=groups:
                  torch.nn.functional.conv2d(x, w, None, s, p, 1, groups))
            with torch.inference_mode():      # warm-up: >= 3 calls and >= 20 ms
                t_end = time.perf_counter() + 0.02
                for i in range(1000):
                    fn()
                    if i >= 2 and time.perf_counter() > t_end:
                        break
            cases[req["id"]] = fn
            res = {"version": torch.__version__}
        else:              # "time": `repeat` samples of `loops` calls, seconds per call
            fn = cases[req["id"]]
            ts = []
            with torch.inference_mode():
                for _ in range(req.get("repeat", 1)):
                    fn()                                # untimed, as in time_calls
                    t0 = time.perf_counter()
                    for _ in range(req["loops"]):
                        fn()
                    ts.append((time.perf_counter() - t0) / req["loops"])
            res = {"t": ts}
        out.write(json.dumps(res) + "\n")
        out.flush()


class TorchWorker:
    """A torch subprocess timing convolutions on request (None if no torch)."""

    def __init__(self, threads):
        env = dict(os.environ)
        if USER_SPINCOUNT is None:
            env.pop("GOMP_SPINCOUNT", None)
        else:
            env["GOMP_SPINCOUNT"] = USER_SPINCOUNT
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--torch-worker",
             "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.n = 0
        self.version = self._ask({"op": "setup", "id": -1, "x": [1, 1, 1, 1],
                                  "w": [1, 1, 1, 1], "stride": 1, "padding": 0})["version"]
        self.spincount = env.get("GOMP_SPINCOUNT", "libgomp default")

    def _ask(self, req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("torch worker died")
        return json.loads(line)

    def conv(self, x_shape, w_shape, stride, padding, groups=1):
        """A timed function: ``fn.sample(loops)`` -> seconds per call, in the worker."""
        self.n += 1
        cid = self.n
        self._ask({"op": "setup", "id": cid, "x": list(x_shape), "w": list(w_shape),
                   "stride": stride, "padding": padding, "groups": groups})
        worker = self

        class Remote:
            def samples(self, loops, repeat=1):
                # let this process's idle BLAS threads stop spinning first
                # (OpenBLAS busy-waits up to ~2**28 cycles after a call)
                time.sleep(0.15)
                ts = worker._ask({"op": "time", "id": cid, "loops": loops, "repeat": repeat})["t"]
                time.sleep(0.01)          # and the worker's OpenMP threads
                return ts
        return Remote()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def start_torch_worker(threads):
    try:
        import importlib.util
        if importlib.util.find_spec("torch") is None:
            return None
    except (ImportError, ValueError):
        return None
    return TorchWorker(threads)


# ----------------------------------------------------------------- methods
def numpy_im2col_conv(x, w, stride, padding):
    """Baseline: pure NumPy im2col (sliding_window_view) + one BLAS matmul, NCHW."""
    N, C, H, W = x.shape
    C_out, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, ::stride, ::stride]                        # (N, C, Ho, Wo, kh, kw)
    Ho, Wo = win.shape[2:4]
    rows = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * kh * kw)
    y = rows @ w.reshape(C_out, -1).T                          # (N*Ho*Wo, C_out)
    return np.ascontiguousarray(y.reshape(N, Ho, Wo, C_out).transpose(0, 3, 1, 2))


def start_ort(threads):
    """A factory ``conv(x, w, stride, padding, groups) -> timed function`` on onnxruntime, or None."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def conv(x, w, stride, padding, groups=1):
        node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[stride] * 2, pads=[padding] * 4,
                                group=groups, kernel_shape=list(w.shape[2:]))
        graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(w, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, {"x": x})
    return conv


def applies(method, k, stride, groups=1, C=None):
    """Whether ``method`` has a form for this convolution (Winograd: 3x3, stride 1, groups 1 or
    depthwise); a method that does not apply gets "–" in the tables, never an im2col fallback."""
    return method not in F.WINOGRAD_TILES or F.winograd_applies((k, k), (stride, stride), (1, 1),
                                                                   groups, C)


def make_runners(methods, layout):
    """name -> make(x_nchw, x_layout, w, stride, padding) -> timed function, or None where the
    method does not apply."""
    runners = {"numpy": lambda x, xl, w, s, p: lambda: numpy_im2col_conv(x, w, s, p)}
    for m in methods:
        runners[m] = (lambda m: lambda x, xl, w, s, p:
                      (lambda: F.conv2d(xl, w, None, s, p, method=m, layout=layout))
                      if applies(m, w.shape[2], s) else None)(m)
    return runners


def time_call(fn, repeat, min_sample=0.01):
    """(median, min) seconds per call over ``repeat`` samples of >= min_sample s each."""
    return time_calls({"f": fn}, repeat, min_sample)["f"]


def time_calls(fns, repeat, min_sample=0.01):
    """{name: (median, min)} seconds per call, the functions timed round-robin.

    Each function is calibrated to samples of >= ``min_sample`` seconds, then
    the ``repeat`` samples of all functions are interleaved, so that a burst
    of other load on the machine hits every method alike and the ratios
    between methods stay meaningful.  Each sample is preceded by one untimed
    call: right after another method (a long Numba region, say), the first
    call can wait for BLAS or OpenMP threads to be woken and rescheduled,
    which a steady stream of calls of one layer does not.  Functions with a
    ``samples(loops,
    repeat)`` method (the torch worker) are timed by it, in one block after
    the others.
    """
    def sample(fn, n):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n

    local = {k: f for k, f in fns.items() if not hasattr(f, "samples")}
    remote = {k: f for k, f in fns.items() if hasattr(f, "samples")}
    loops = {}
    for name, fn in local.items():
        sample(fn, 1)                          # warm-up (JIT, caches, allocator)
        one = max(sample(fn, 1), 1e-7)
        loops[name] = max(1, int(min_sample / one))
    samples = {name: [] for name in local}
    for _ in range(repeat):
        for name, fn in local.items():
            fn()                  # untimed: the first call after another method pays
            samples[name].append(sample(fn, loops[name]))   # for its thread wake-ups
    for name, fn in remote.items():            # timed in another process, in one block
        fn.samples(1)
        one = max(fn.samples(1)[0], 1e-7)
        samples[name] = fn.samples(max(1, int(min_sample / one)), repeat)
    return {name: (statistics.median(samples[name]), min(samples[name])) for name in fns}


def geomean(v):
    v = [x for x in v if x > 0]
    return float(np.exp(np.mean(np.log(v)))) if v else float("nan")


GROUPED = [  # (C, H, groups, stride): 3x3 convs, C_out = C, padding 1
    (32, 32, 32, 1), (128, 16, 128, 1), (512, 4, 512, 1), (128, 16, 128, 2),
    (64, 32, 32, 1), (64, 32, 16, 1), (64, 32, 8, 1), (64, 32, 4, 1),
    (256, 8, 64, 1), (256, 8, 16, 1),
]


def grouped_table(batches, repeat, torch, layout, ort=None):
    """Markdown rows: every method on depthwise/grouped 3x3 convolutions."""
    rng = np.random.default_rng(1)
    methods = ["im2col", "mec", "direct", "winograd", "winograd4"]
    cols = methods + (["torch"] if torch is not None else []) + (["ort"] if ort is not None else [])
    lines = ["## Grouped and depthwise 3x3 convolutions (C_out = C, padding 1)", "",
             "Not in ResNet-18; they set `choose_method`'s rule (direct up to "
             f"{F.DIRECT_MAX_GROUP_CHANNELS} channels per group, MEC beyond).  Winograd: "
             "depthwise stride-1 rows only.", "",
             "| batch | C | H×W | groups | C/group | stride | "
             + " | ".join(f"{c} ms" for c in cols) + " | auto picks |",
             "|---:|---:|---|---:|---:|---:|" + "---:|" * len(cols) + "---|"]
    for N in batches:
        for C, H, G, s in GROUPED:
            x = rng.standard_normal((N, C, H, H)).astype(np.float32)
            w = rng.standard_normal((C, C // G, 3, 3)).astype(np.float32)
            xl = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            fns = {m: (lambda m: lambda: F.conv2d(xl, w, None, s, 1, 1, G, method=m,
                                                  layout=layout))(m)
                   for m in methods if applies(m, 3, s, G, C)}
            if torch is not None:
                fns["torch"] = torch.conv(x.shape, w.shape, s, 1, G)
            if ort is not None:
                fns["ort"] = ort(x, w, s, 1, G)
            res = time_calls(fns, repeat)
            cells = [fmt_ms(res[c][0]) if c in res else "–" for c in cols]
            pickm = F.choose_method(C, H, H, C, 3, s, 1, G, N)
            lines.append(f"| {N} | {C} | {H}×{H} | {G} | {C // G} | {s} | " + " | ".join(cells)
                         + f" | {pickm} |")
            print(f"grouped N={N} C={C} H={H} G={G} s={s}: " + " ".join(cells), file=sys.stderr)
    return lines + [""]


# ---------------------------------------------------------- compile times
COMPILE_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, {root!r})
from tabconv_np import functional as F
res = {{"import": time.perf_counter() - t0}}
big = np.ones((8, 64, 32, 32), np.float32); wb = np.ones((64, 64, 3, 3), np.float32)
small = np.ones((1, 2, 4, 4), np.float32); ws = np.ones((2, 2, 3, 3), np.float32)
for m in ("im2col", "mec", "direct"):
    t0 = time.perf_counter()
    F.conv2d(big, wb, None, 1, 1, method=m)      # parallel kernel
    F.conv2d(small, ws, None, 1, 1, method=m)    # serial kernel
    res[m] = time.perf_counter() - t0
print(json.dumps(res))
"""


def compile_times(threads):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
    env.pop("TABCONV_NO_CACHE", None)
    script = COMPILE_SCRIPT.format(root=ROOT)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        env["NUMBA_CACHE_DIR"] = d
        for label in ("cold", "cached"):
            r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                               text=True, timeout=900)
            if r.returncode:
                raise RuntimeError(r.stderr[-2000:])
            out[label] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


# -------------------------------------------------------------------- main
def _blas_name():
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{cfg.get('name')} {cfg.get('version')}"
    except Exception:                      # older numpy: no dict mode
        return "?"


def machine_info(threads, torch):
    import numba
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
        "python": platform.python_version(), "numpy": np.__version__,
        "numba": numba.__version__, "numba threading layer": None,
        "BLAS": _blas_name(),
        "torch": torch.version if torch is not None else "not installed",
        "GOMP_SPINCOUNT": f"package/Numba process {os.environ.get('GOMP_SPINCOUNT')}, "
                          f"torch process {torch.spincount if torch is not None else '-'}",
        "load average at start": "%.2f %.2f %.2f" % os.getloadavg(),
    }


def fmt_ms(t):
    return f"{t * 1e3:.3f}" if t < 0.01 else f"{t * 1e3:.2f}" if t < 1 else f"{t * 1e3:.0f}"


def main(args):
    import numba
    numba.set_num_threads(args.threads)
    torch = start_torch_worker(args.threads)
    ort = start_ort(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    batches = [int(b) for b in args.batch.split(",")]
    inputs = [tuple(int(v) for v in s.split("x")) for s in args.inputs.split(",")]
    variants = args.variants.split(",")
    runners = make_runners(methods, args.layout)
    cols = list(runners) + (["torch"] if torch is not None else []) + (["ort"] if ort is not None else [])
    info = machine_info(args.threads, torch)
    rng = np.random.default_rng(0)
    lines = ["# Convolution methods on ResNet-18 layers", ""]
    ratios = {}           # (batch, method) -> list of (t / t_numpy, t / t_torch)
    net_total = {}        # (variant, input, batch, method) -> summed time incl. multiplicity
    ws_rows = []
    t_start = time.time()
    for variant in variants:
        for shp in inputs:
            layers = resnet18_convs(variant, shp)
            for N in batches:
                lines += [f"## {variant}, input {'x'.join(map(str, shp))}, batch {N}", "",
                          "| layer | C_in→C_out, k/s | H×W in | MMACs | "
                          + " | ".join(f"{c} ms" for c in cols) + " |",
                          "|---|---|---|---:|" + "---:|" * len(cols)]
                for L in layers:
                    x = rng.standard_normal((N, L["C"], L["H"], L["W"])).astype(np.float32)
                    w = rng.standard_normal((L["C_out"], L["C"], L["k"], L["k"])).astype(np.float32)
                    xl = x if args.layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
                    Ho, Wo = F.conv_output_size((L["H"], L["W"]), L["k"], L["s"], L["p"])
                    macs = N * L["C_out"] * Ho * Wo * L["C"] * L["k"] ** 2
                    fns = {c: runners[c](x, xl, w, L["s"], L["p"]) for c in runners}
                    fns = {c: f for c, f in fns.items() if f is not None}
                    if torch is not None:
                        fns["torch"] = torch.conv(x.shape, w.shape, L["s"], L["p"])
                    if ort is not None:
                        fns["ort"] = ort(x, w, L["s"], L["p"])
                    res = time_calls(fns, args.repeat)
                    times = {c: res[c][0] for c in res}
                    best = {c: res[c][1] for c in res}
                    cells = []
                    for c in cols:
                        key = (variant, shp, N, c)
                        if c not in times:       # the network would run im2col there
                            cells.append("–")
                            net_total[key] = net_total.get(key, 0.0) + times.get("im2col", np.nan) * L["count"]
                            continue
                        r = times[c] / times["numpy"]
                        cell = fmt_ms(times[c])
                        if c != "numpy":
                            cell += f" ({r:.2f}"
                            if "torch" in times and c != "torch":
                                cell += f", {times[c] / times['torch']:.2f}t"
                            cell += ")"
                        cells.append(cell)
                        tr = times[c] / times["torch"] if "torch" in times else float("nan")
                        br = best[c] / best["numpy"]
                        btr = best[c] / best["torch"] if "torch" in best else float("nan")
                        ir = times[c] / times["im2col"] if "im2col" in times else float("nan")
                        orr = times[c] / times["ort"] if "ort" in times else float("nan")
                        ratios.setdefault((N, c), {})[(variant, shp, L["name"])] = (r, tr, br, btr, ir, orr)
                        net_total[key] = net_total.get(key, 0.0) + times[c] * L["count"]
                    lines.append(f"| {L['name']} | {L['C']}→{L['C_out']}, {L['k']}/{L['s']} | "
                                 f"{L['H']}×{L['W']} | {macs / 1e6:.1f} | " + " | ".join(cells) + " |")
                    if N == batches[0]:
                        ws = F.lowering_workspace_bytes(L["C"], L["H"], L["W"], L["k"], L["k"],
                                                        L["s"], L["p"], 1, N=1)
                        ws_rows.append((variant, shp, L, ws))
                    print(f"[{time.time() - t_start:6.1f}s] {variant} {shp} N={N} {L['name']}: "
                          + " ".join(f"{c}={fmt_ms(times[c])}" for c in times), file=sys.stderr)
                tot = "| **all convs** (with repeats; a method that does not apply: as im2col) | | | | " \
                    + " | ".join(fmt_ms(net_total[(variant, shp, N, c)]) for c in cols) + " |"
                lines += [tot, "", "Cells: ms per call (ratio to numpy, ratio to torch `t`); ort: onnxruntime, one Conv node.", ""]
    # summary
    info["load average at end"] = "%.2f %.2f %.2f" % os.getloadavg()
    info["wall time of the timings"] = f"{time.time() - t_start:.0f} s"
    info["numba threading layer"] = numba.threading_layer()
    def f2(v):
        return "–" if v != v else f"{v:.2f}"

    head = ["## Summary: geometric mean over layers of time / baseline time", "",
            "Over the layers where the method applies (the Winograd methods: 3x3 stride-1 "
            "layers only; `layers` gives their number).", "",
            "| batch | method | layers | vs im2col (median) | vs numpy im2col (median) "
            "| vs torch (median) | vs onnxruntime (median) | vs numpy (best sample) | vs torch (best sample) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for N in batches:
        for c in cols:
            if c == "numpy":
                continue
            rs = list(ratios[(N, c)].values())
            g = [geomean([r[k] for r in rs]) for k in (4, 0, 1, 5, 2, 3)]
            head.append(f"| {N} | {c} | {len(rs)} | " + " | ".join(f2(v) for v in g) + " |")
        if len(methods) > 1:
            # per layer, the fastest of the package's methods that apply there
            per = [ratios[(N, m)] for m in methods]
            layer_keys = set().union(*per)
            g = [geomean([min(r[i][k] for r in per if i in r) for i in layer_keys])
                 for k in (4, 0, 1, 5, 2, 3)]
            head.append(f"| {N} | best of {'/'.join(methods)} per layer | {len(layer_keys)} | "
                        + " | ".join(f2(v) for v in g) + " |")
    head += ["", f"Layouts: the package's methods take and return {args.layout}; numpy "
             "and torch run NCHW.  Below 1 is faster than the baseline.  \"median\" "
             "compares the medians of the samples, \"best sample\" the fastest "
             "samples (less sensitive to other load on the machine)."]
    meta = ["Machine and settings:", ""] + [f"- {k}: {v}" for k, v in info.items()]
    meta += [f"- note: {n}" for n in args.note]
    meta += [f"- repeats: median of {args.repeat} samples (each >= 10 ms of calls), methods "
             "interleaved round-robin",
             f"- command: `python bench/conv_layers.py {' '.join(sys.argv[1:])}`", ""]
    lines = lines[:2] + meta + head + [""] + lines[2:]
    # workspace
    lines += ["## Lowering workspace per image (float32)", "",
              "| variant | input | layer | im2col KiB | MEC KiB | MEC / im2col |",
              "|---|---|---|---:|---:|---:|"]
    for variant, shp, L, ws in ws_rows:
        lines.append(f"| {variant} | {'x'.join(map(str, shp))} | {L['name']} | "
                     f"{ws['im2col'] / 1024:.1f} | {ws['mec'] / 1024:.1f} | "
                     f"{ws['mec'] / ws['im2col']:.2f} |")
    lines.append("")
    if not args.no_grouped:
        lines += grouped_table(batches, args.repeat, torch, args.layout, ort)
    if torch is not None:
        torch.close()
    if not args.no_compile:
        ct = compile_times(args.threads)
        lines += ["## JIT compile time (s): first calls, parallel + serial kernels, NCHW", "",
                  "| | import | im2col | mec | direct |", "|---|---:|---:|---:|---:|"]
        for label in ("cold", "cached"):
            r = ct[label]
            lines.append(f"| {label} | {r['import']:.2f} | {r['im2col']:.2f} | {r['mec']:.2f} | "
                         f"{r['direct']:.2f} |")
        lines += ["", "cold: empty NUMBA_CACHE_DIR (a fresh subprocess); cached: a second "
                  "subprocess on the same cache directory.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    if ARGS.torch_worker:
        torch_worker_main(ARGS.threads)
    else:
        main(ARGS)
