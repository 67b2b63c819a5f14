"""Time table layers (TabConv) against the exact im2col convolution, layer by layer.

Usage::

    python bench/table_layers.py [--K 16,256,8192] [--C 4,8,16] [--batch 1,32]
                                 [--repeat 3] [--threads 2] [--quick] [--out docs/bench_tables.md]

For every distinct conv shape of ResNet-18 "paper" on a 1x28x28 input (the
3x3 convs and the 1x1 shortcut convs), every number of prototypes ``K``,
codebooks ``C`` and batch size, it times

* ``exact``: ``Conv2d(method="im2col")`` (lowering + BLAS GEMM + bias), the
  reference every ratio divides by;
* ``encode``: the encoding kernel alone (nearest of K prototypes in each of
  C subspaces, ``rows*K*D`` multiply-adds) on already-lowered rows;
* ``lookup``: the lookup-accumulate kernel alone (``rows*M*C`` lookups);
* ``table``: the whole ``TableConv2d.forward`` (lowering, encoding, lookup,
  layout transpose).

A ratio above 1 means slower than the exact layer.  Prototypes and tables
are random (timings do not depend on their values).  Each time is the median
of ``--repeat`` samples, each sample averaging enough calls to last >= 5 ms.
Markdown on stdout and in ``--out``.
"""
import argparse
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

#: (name, C_in, C_out, kernel, stride, padding, input side): the distinct conv
#: shapes of ResNet-18 "paper" on 1x28x28 (stem stride 2, every stage stride 2).
SHAPES = [
    ("conv1 (stem)", 1, 64, 3, 2, 1, 28),
    ("layer1.0.conv1", 64, 64, 3, 2, 1, 14),
    ("layer1.x.conv", 64, 64, 3, 1, 1, 7),
    ("layer1.0.downsample", 64, 64, 1, 2, 0, 14),
    ("layer2.0.conv1", 64, 128, 3, 2, 1, 7),
    ("layer2.x.conv", 128, 128, 3, 1, 1, 4),
    ("layer2.0.downsample", 64, 128, 1, 2, 0, 7),
    ("layer3.0.conv1", 128, 256, 3, 2, 1, 4),
    ("layer3.x.conv", 256, 256, 3, 1, 1, 2),
    ("layer3.0.downsample", 128, 256, 1, 2, 0, 4),
    ("layer4.0.conv1", 256, 512, 3, 2, 1, 2),
    ("layer4.x.conv", 512, 512, 3, 1, 1, 1),
    ("layer4.0.downsample", 256, 512, 1, 2, 0, 2),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--K", default="16,256,8192", help="prototypes per subspace")
    p.add_argument("--C", default="4,8,16", help="codebooks (subspaces)")
    p.add_argument("--batch", default="1,32")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="Numba and BLAS threads (default: all)")
    p.add_argument("--quick", action="store_true", help="K 16,256; batch 1; 2 samples")
    p.add_argument("--layers", help="comma-separated substrings of layer names to keep")
    p.add_argument("--out", help="also write the markdown here")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:
    # BLAS (the exact layer's GEMM) reads its thread count when numpy is first imported:
    # with more BLAS threads than free cores, each GEMM waits for a descheduled thread
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402


def timeit(fn, repeat, min_time=0.005):
    """Median seconds per call of ``fn()`` over ``repeat`` samples of >= ``min_time`` each."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, min(1000, int(min_time / one)))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    return statistics.median(samples)


def bench_layer(shape, Ks, Cs, batch, repeat, rng):
    from tabconv_np.functional import im2col_rows
    from tabconv_np.layers import Conv2d
    from tabconv_np.pq import encode_rows, subspace_length
    from tabconv_np.tables import TableConv2d
    from tabconv_np.tree_tables import TreeConv2d
    name, cin, cout, k, s, p, side = shape
    D = cin * k * k
    conv = Conv2d(cin, cout, k, s, p, bias=True, method="im2col")
    conv.params["weight"][...] = rng.standard_normal(conv.params["weight"].shape) * 0.1
    x = np.maximum(rng.standard_normal((batch, cin, side, side)), 0).astype(np.float32)
    exact = timeit(lambda: conv(x, "NCHW"), repeat)
    rows, (n, ho, wo) = im2col_rows(x, k, s, p)
    out = {"name": name, "D": D, "M": cout, "rows": rows.shape[0], "exact": exact, "cells": {}}
    # hash-tree layer: one codebook per input channel's window (per 4 channels for 1x1), K = 16,
    # 8-bit tables, encoding read from the tensor; random trees and tables
    C = cin if k > 1 else max(1, -(-cin // 4))
    tl = TreeConv2d(cin, cout, k, s, p, n_codebooks=C)
    tl.params["split_cols"][...] = rng.integers(0, D, tl.params["split_cols"].shape)
    tl.params["thresholds"][...] = rng.standard_normal(tl.params["thresholds"].shape) * 0.5
    tl.params["table"][...] = rng.integers(0, 256, tl.params["table"].shape)
    out["tree"] = timeit(lambda: tl(x, "NCHW"), repeat)
    for K in Ks:
        for C in Cs:
            if C > D:
                out["cells"][(K, C)] = None
                continue
            t = TableConv2d(cin, cout, k, s, p, n_codebooks=C, n_prototypes=K, bias=True)
            Ds = subspace_length(D, C)
            t.params["prototypes"][...] = rng.standard_normal((C, K, Ds)).astype(np.float32)
            t.params["table"][...] = 1.0
            P = t.params["prototypes"]
            codes = encode_rows(rows, P)
            enc = timeit(lambda: encode_rows(rows, P), repeat)
            look = timeit(lambda: t.lookup_trusted(codes), repeat)
            whole = timeit(lambda: t(x, "NCHW"), repeat)
            out["cells"][(K, C)] = (enc, look, whole)
            del t
    return out


def markdown(results, Ks, Cs, batches, args, seconds):
    import numba
    lines = ["# Table layers vs exact im2col convolution (ResNet-18 \"paper\", 1x28x28)", "",
             f"Generated by `python bench/table_layers.py{' --quick' if args.quick else ''}` "
             f"in {seconds:.0f} s on {platform.machine()} ({os.cpu_count()} cores, "
             f"{numba.get_num_threads()} Numba threads, BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}), numpy {np.__version__}, numba {numba.__version__}.",
             "The machine is shared: absolute times are noisy, ratios less so.", "",
             "Each cell: **encode / lookup / whole table layer**, each divided by the exact "
             "`Conv2d(method=\"im2col\")` time of the same layer and batch (so > 1 is slower). "
             "Encoding costs `rows*K*D` multiply-adds (the exact layer `rows*M*D`), so its ratio "
             "grows about like K/M; the lookup costs `rows*M*C` reads and adds. "
             "`-`: C > D (the stem has D = 9).",
             "Column **tree**: the whole hash-tree layer (`TreeConv2d`: 4 comparisons per codebook "
             "read from the input tensor, K = 16, 8-bit tables; one codebook per input channel's "
             "window, per 4 channels for 1x1) divided by the exact time.", ""]
    for batch in batches:
        lines += [f"## Batch {batch}", "",
                  "| layer | D | M | rows | exact ms | tree | K | " + " | ".join(f"C={c}" for c in Cs) + " |",
                  "|---|---:|---:|---:|---:|---:|---:|" + "---|" * len(Cs)]
        for r in results[batch]:
            for i, K in enumerate(Ks):
                cells = []
                for C in Cs:
                    v = r["cells"][(K, C)]
                    cells.append("-" if v is None else " / ".join(f"{t / r['exact']:.2g}" for t in v))
                head = (f"| {r['name']} | {r['D']} | {r['M']} | {r['rows']} | {1e3 * r['exact']:.3f} "
                        f"| {r['tree'] / r['exact']:.2g} " if i == 0 else "| | | | | | ")
                lines.append(head + f"| {K} | " + " | ".join(cells) + " |")
        lines.append("")
        # geometric means over layers
        g3 = [r["tree"] / r["exact"] for r in results[batch] if "stem" not in r["name"]]
        lines += [f"Hash-tree layer / exact, geometric mean over the non-stem layers, batch {batch}: "
                  f"{float(np.exp(np.mean(np.log(g3)))):.2g}", ""]
        lines += [f"Geometric mean over layers, batch {batch} (encode / lookup / whole):", "",
                  "| K | " + " | ".join(f"C={c}" for c in Cs) + " |", "|---:|" + "---|" * len(Cs)]
        for K in Ks:
            cells = []
            for C in Cs:
                vals = [r["cells"][(K, C)] for r in results[batch] if r["cells"][(K, C)] is not None]
                g = [float(np.exp(np.mean([np.log(v[j] / r["exact"]) for v, r in
                                          zip(vals, [r for r in results[batch] if r["cells"][(K, C)] is not None])])))
                     for j in range(3)]
                cells.append(" / ".join(f"{x:.2g}" for x in g))
            lines.append(f"| {K} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    args = ARGS if argv is None and ARGS is not None else parse_args(argv)
    import numba
    if args.threads:
        numba.set_num_threads(args.threads)
    from tabconv_np.tables import warmup
    warmup()
    Ks = [16, 256] if args.quick else [int(v) for v in args.K.split(",")]
    Cs = [int(v) for v in args.C.split(",")]
    batches = [1] if args.quick else [int(v) for v in args.batch.split(",")]
    repeat = 2 if args.quick else args.repeat
    shapes = SHAPES
    if args.layers:
        keep = args.layers.split(",")
        shapes = [s for s in SHAPES if any(k in s[0] for k in keep)]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    results = {}
    for batch in batches:
        results[batch] = []
        for shape in shapes:
            results[batch].append(bench_layer(shape, Ks, Cs, batch, repeat, rng))
            print(f"batch {batch}: {shape[0]} done", file=sys.stderr)
    md = markdown(results, Ks, Cs, batches, args, time.perf_counter() - t0)
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
