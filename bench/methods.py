"""Exact convolution methods side by side: multiplications, additions, latency and error per layer.

Usage::

    python bench/methods.py [--batches 1,32] [--threads 1] [--repeats 7] [--out docs/methods.md]

For every distinct 3x3 convolution shape of the shipped ResNet-18 "paper"
(Fashion-MNIST, 1x28x28) and of ResNet-18 at the ImageNet shape (3x224x224),
it reports, per method (``im2col``, ``winograd`` = F(2x2, 3x3),
``winograd4`` = F(4x4, 3x3), ``strassen``):

* multiplications and additions per image, from ``Conv2d.cost`` (a MAC is one
  of each; Winograd's transforms and Strassen's block sums counted as written);
* the largest error against a float64 reference, relative to the largest
  output magnitude: at 28x28 on the shipped ResNet-18's own weights and the
  activations that layer receives on 16 test-sample images, at 224x224 on
  random input and He-scaled random weights;
* latency (median of ``--repeats`` interleaved samples) as a ratio to im2col in
  the same process, at each batch size, with ``--threads`` threads.

Winograd applies to stride-1 layers only; other rows show "–".

With ``--engines`` (default ``lcnn,rsdtr``; ``none`` skips it), a second table
(alone, printed and not written, with ``--only-engines``)
converts the shipped ResNet-18 "paper" (Fashion-MNIST) with the approximate
engines at the settings of :data:`ENGINE_SETTINGS` (calibration: 1000 seeded
training images; test: the shipped 1000-image sample) and reports, per setting:
accuracy, retention (accuracy / exact accuracy), MACs (for LCNN and RSDTR every
multiply is a MAC: the ``multiplies`` convention, which is what the LCNN paper
counts), all arithmetic (the ``full`` convention), parameters, storage and the
latency of ``predict`` as a ratio to the exact (BN-folded) network timed in the
same round robin.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tree_network import _ints, time_round_robin, write_text_atomic  # noqa: E402

METHODS = ("im2col", "winograd", "winograd4", "strassen")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "methods.md"))
    p.add_argument("--engines", default="lcnn,rsdtr",
                   help="approximate engines for the network table (comma list, or 'none')")
    p.add_argument("--only-engines", action="store_true",
                   help="print the engine table only (no per-layer table, nothing written)")
    a = p.parse_args(argv)
    a.batch_list = _ints(p, a.batches, "--batches")
    return a


def layer_shapes():
    """Distinct (C, C_out, H, stride) of the 3x3 convs of ResNet-18 at 28x28 and 224x224."""
    from tabconv_np.models import build
    from tabconv_np.ops import count_ops
    out = []
    for c, size in ((1, 28), (3, 224)):
        net = build("resnet18-paper", c, 10, input_size=size)
        mods = dict(net.body.modules())
        for r in count_ops(net, (c, size, size)).rows:
            m = mods.get(r["name"])
            if r["type"] == "Conv2d" and m.kernel_size == (3, 3) and m.in_channels > 3:
                key = (m.in_channels, m.out_channels, r["in_shape"][1], m.stride[0])
                if key not in out:
                    out.append(key)
    return out


def shipped_convs(n_images=16):
    """{(C, C_out, H, stride): (weight, bias, input NHWC)} of the shipped ResNet-18 "paper" (Fashion-MNIST):
    the first 3x3 conv of each shape, with what it receives on ``n_images`` test-sample images."""
    import numpy as np
    import tabconv_np
    from tabconv_np.data import load_dataset
    from tabconv_np.evaluate import layer_inputs
    from tabconv_np.layers import Conv2d
    net = tabconv_np.load(os.path.join(ROOT, "weights", "resnet18-paper_fashion-mnist.h5"))
    images = load_dataset("sample", "test", limit=n_images)[0]
    out = {}
    for _, m, x in layer_inputs(net, images, lambda m: isinstance(m, Conv2d) and m.kernel_size == (3, 3)
                                and m.in_channels > 3):
        out.setdefault((m.in_channels, m.out_channels, x.shape[2], m.stride[0]),
                       (m.params["weight"], m.params.get("bias"), np.ascontiguousarray(x.transpose(0, 2, 3, 1))))
    return out


def main(args):
    import numpy as np
    import tabconv_np
    from tabconv_np.errors import ConfigError
    from tabconv_np.functional import conv2d
    from tabconv_np.plan import PreparedConv
    from tabconv_np.layers import Conv2d
    from tabconv_np.network import Network
    tabconv_np.set_num_threads(args.threads)
    batches = args.batch_list
    rng = np.random.default_rng(0)
    shipped = shipped_convs()
    L = ["# Exact convolution methods: multiplications, additions, latency, error", "",
         f"Generated by `python bench/methods.py --batches {args.batches} --threads {args.threads}`: "
         "the distinct 3x3 convolutions of ResNet-18 (28x28 \"paper\" input and the 224x224 ImageNet shape), "
         "NHWC. Error at 28x28: the shipped ResNet-18 \"paper\" (Fashion-MNIST) layer's own weights on what it "
         "receives from 16 test-sample images; at 224x224: random input and He-scaled random weights (no "
         "shipped network at that size). Counts per image from `Conv2d.cost` (a MAC = one "
         "multiplication + one addition); error = max |method - float64 reference| / max |reference|; "
         f"time = median of {args.repeats} interleaved samples, as a ratio to im2col in the same run "
         f"(< 1: faster), {args.threads} thread(s). Winograd needs stride 1. im2col and Winograd are timed "
         "as a prepared plan runs them (`tabconv_np.plan.PreparedConv`: weights arranged, filters "
         "transformed once, outside the timing); Strassen through `conv2d` (no prepared form).", "",
         "| layer (C->C_out, HxW, stride) | method | mults (M) | adds (M) | max rel. error | "
         + " | ".join(f"time b{b} / im2col" for b in batches) + " |",
         "|---|---|---:|---:|---:|" + "---:|" * len(batches)]
    for C, Co, H, s in layer_shapes():
        w = (rng.standard_normal((Co, C, 3, 3)) * np.sqrt(2 / (9 * C))).astype(np.float32)
        x1 = rng.standard_normal((1, H, H, C)).astype(np.float32)
        if (C, Co, H, s) in shipped:
            w, _, x1 = shipped[(C, Co, H, s)]
        ref = conv2d(x1.astype(np.float64), w, None, s, 1, method="naive", layout="NHWC") \
            if H <= 14 else None
        row = {}
        for m in METHODS:
            layer = Conv2d(C, Co, 3, s, 1, method=m, bias=False)
            try:
                y = conv2d(x1, w, None, s, 1, method=m, layout="NHWC")
            except ConfigError:
                continue
            cost = tabconv_np.count_ops(Network(layer, (C, H, H)), (C, H, H)).total
            err = (float(np.abs(y - ref).max() / np.abs(ref).max()) if ref is not None else None)
            row[m] = {"mults": (cost["macs"] + cost["mults"]) / 1e6, "adds": (cost["macs"] + cost["adds"]) / 1e6,
                      "err": err, "t": {}}
        for b in batches:
            x = rng.standard_normal((b, H, H, C)).astype(np.float32)
            # im2col and Winograd as a plan runs them (weights arranged once, PreparedConv);
            # Strassen through conv2d (it has no prepared form)
            fns = {}
            for m in row:
                if m == "strassen":
                    fns[m] = lambda: conv2d(x, w, None, s, 1, method="strassen", layout="NHWC")
                    continue
                try:
                    fns[m] = (lambda p: lambda: p(x))(PreparedConv(w, None, (s, s), (1, 1, 1, 1), (1, 1),
                                                                   (C, H, H), method=m))
                except ConfigError:       # the plan drops taps that read only padding: no 3x3 left
                    pass
            t = time_round_robin(fns, args.repeats, warmup=1, min_sample=0.01, pause=0.0)
            for m in fns:
                row[m]["t"][b] = t[m]["median"] / t["im2col"]["median"]
        for m, v in row.items():
            err = "–" if v["err"] is None else f"{v['err']:.1e}"
            L.append(f"| {C}->{Co}, {H}x{H}, s{s} | {m} | {v['mults']:.1f} | {v['adds']:.1f} | {err} | "
                     + " | ".join(f"{v['t'][b]:.2f}" if b in v["t"] else "–" for b in batches) + " |")
        print(L[-1], file=sys.stderr, flush=True)
    L += ["", "Errors are not measured above 14x14 (the float64 reference is a plain loop). "
          "Strassen recurses only where rows, columns and outputs are all >= 64 "
          "(`tabconv_np.conv.strassen.CUTOFF`); elsewhere it is one BLAS call and counts as im2col.", ""]
    engines = [e for e in args.engines.split(",") if e and e != "none"]
    if engines:
        L += engine_rows(engines, batches, args.repeats)
    text = "\n".join(L)
    print(text)
    if args.out:
        write_text_atomic(args.out, text)


#: The settings of the engine table, per method: ``convert`` keywords (the stem conv and the
#: classifier stay exact for LCNN; RSDTR as the authors do it, 3x3 convs inside blocks).
ENGINE_SETTINGS = {
    "lcnn": [dict(atoms=a, sparsity=s_, refine=r, switches=[0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
             for a, s_, r in ((32, 2, None), (32, 2, "exact"), (64, 3, "exact"))],
    "rsdtr": [dict(eps=e, convs="blocks", refine=r) for e, r in ((0.1, None), (0.3, None), (0.5, None),
                                                                 (0.3, "exact"))],
}


def _setting_text(kw):
    return ", ".join(f"{k}={v}" for k, v in kw.items() if k != "switches")


def engine_rows(engines, batches, repeats):
    """Markdown lines of the engine table (module docstring) for ``engines``."""
    import numpy as np
    import tabconv_np
    from tabconv_np.conversion import convert
    from tabconv_np.data import load_dataset
    from tabconv_np.fold import fold_batchnorm
    from tabconv_np.ops import count_ops
    net = tabconv_np.load(os.path.join(ROOT, "weights", "resnet18-paper_fashion-mnist.h5"))
    xtr, _ = load_dataset("fashion-mnist", "train")
    xc = xtr[np.sort(np.random.default_rng(0).choice(len(xtr), 1000, replace=False))]
    xt, yt = load_dataset("sample", "test")
    exact_net = fold_batchnorm(net)
    e = count_ops(exact_net).total
    acc0 = float(np.mean(exact_net.predict(xt).argmax(1) == yt))
    L = ["", "## Approximate engines on a whole network", "",
         f"ResNet-18 \"paper\", Fashion-MNIST: calibration on 1000 seeded training images, accuracy on the "
         f"shipped 1000-image test sample (exact: {acc0:.3f}, {e['macs'] / 1e6:.2f} M MACs, "
         f"{e['storage_bytes'] / 1e6:.2f} MB). MACs per image (every multiply of these engines is a MAC: "
         "the `multiplies` convention, the LCNN paper's count); all ops = the `full` convention; time = "
         f"median of {repeats} round-robin samples of `predict` as a ratio to the exact network.", "",
         "| method | setting | accuracy | retention | MACs (M) | all ops (M) | params (M) | storage (MB) | "
         + " | ".join(f"time b{b} / exact" for b in batches) + " |",
         "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(batches)]
    for method in engines:
        for kw in ENGINE_SETTINGS[method]:
            res = convert(net, xc, method=method, progress=False, **kw)
            acc = float(np.mean(res.network.predict(xt).argmax(1) == yt))
            c = count_ops(res.network).total
            times = []
            for b in batches:
                xb = exact_net.normalize(xt[:b])
                t = time_round_robin({"exact": lambda: exact_net(xb), "engine": lambda: res.network(xb)},
                                     repeats, warmup=1, min_sample=0.01, pause=0.0)
                times.append(t["engine"]["median"] / t["exact"]["median"])
            L.append(f"| {method} | {_setting_text(kw)} | {acc:.3f} | {acc / acc0:.3f} | {c['macs'] / 1e6:.2f} | "
                     f"{c['full'] / 1e6:.2f} | {c['params'] / 1e6:.3f} | {c['storage_bytes'] / 1e6:.2f} | "
                     + " | ".join(f"{r:.2f}" for r in times) + " |")
            print(L[-1], file=sys.stderr, flush=True)
    return L


if __name__ == "__main__":
    _args = parse_args()
    if _args.only_engines:
        print("\n".join(engine_rows([e for e in _args.engines.split(",") if e and e != "none"],
                                     _args.batch_list, _args.repeats)))
    else:
        main(_args)
