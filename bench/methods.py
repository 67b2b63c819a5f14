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

Each layer also has an ``int8`` row (``tabconv_np.int8.Int8Conv2d``, the
input range calibrated on the same random input by min/max): its
multiplications are 8-bit, its additions 32-bit integer ones, and its error is
the quantisation error.

Each table is written into ``--out`` between its own marker lines (``LAYERS``,
``NETWORKS_TABLE``), the rest of the file kept (``bench/rsdtr_sweep.py``
writes another section there); ``--no-layers`` leaves the first as it is.

A second table (``--networks``, default every shipped network present) puts
compression methods on whole trained networks: each method's network is
calibrated on ``--calib`` training images (a seeded subset), evaluated on the
shipped test sample (Fashion-MNIST: the 1,000 ``sample`` test images; MNIST:
the 1,000-image test subset) and timed against the exact network, both
through a prepared plan (``tabconv_np.prepare``), at each batch size.  Rows:
network, data set, method and settings, accuracy, retention (accuracy /
exact accuracy), agreement with the exact network's predictions, the
method's own op units, float MACs, storage, latency ratio.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tree_network import _ints, write_section  # noqa: E402
from tabconv_np.timing import time_round_robin  # noqa: E402

METHODS = ("im2col", "winograd", "winograd4", "strassen")
#: The shipped networks of the compression table (those present in weights/).
NETWORKS = ("resnet18-paper_fashion-mnist", "resnet34-paper_fashion-mnist", "nin_fashion-mnist",
            "resnet18-paper_mnist", "nin_mnist", "resnet20_fashion-mnist")


#: Markers of this script's two sections in ``--out`` (other scripts write other sections there).
LAYERS = ("<!-- methods.py layers: begin -->", "<!-- methods.py layers: end -->")
NETWORKS_TABLE = ("<!-- methods.py networks: begin -->", "<!-- methods.py networks: end -->")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "methods.md"))
    p.add_argument("--networks", default=",".join(NETWORKS),
                   help="shipped networks (weights/<name>.h5) for the compression table; '' for none")
    p.add_argument("--calib", type=int, default=1000, help="calibration (training) images per network")
    p.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
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
         f"Generated by `python bench/methods.py --batches {args.batches} --threads {args.threads}"
         f"{' --networks ' + repr(args.networks) if not args.networks else ''}`: "
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
    for C, Co, H, s in ([] if args.no_layers else layer_shapes()):
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
        row["int8"], q8 = int8_layer_row(w, x1, s, ref)
        for b in batches:
            x = rng.standard_normal((b, H, H, C)).astype(np.float32)
            # im2col and Winograd as a plan runs them (weights arranged once, PreparedConv);
            # Strassen through conv2d (it has no prepared form)
            fns = {"int8": lambda: q8.forward(x, "NHWC")}
            for m in row:
                if m == "int8":
                    continue
                if m == "strassen":
                    fns[m] = lambda: conv2d(x, w, None, s, 1, method="strassen", layout="NHWC")
                    continue
                try:
                    fns[m] = (lambda p: lambda: p(x))(PreparedConv(w, None, (s, s), (1, 1, 1, 1), (1, 1),
                                                                   (C, H, H), method=m))
                except ConfigError:       # the plan drops taps that read only padding: no 3x3 left
                    pass
            fns = dict(sorted(fns.items(), key=lambda kv: kv[0] == "int8"))      # int8 last, as in the table
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
          "(`tabconv_np.conv.strassen.CUTOFF`); elsewhere it is one BLAS call and counts as im2col. "
          "int8 rows: mults = 8-bit multiplies plus one quantising multiply per input element and one "
          "requantising float multiply per output; adds = 32-bit integer adds plus one zero-point "
          "correction per output; the error is the quantisation error (weights per output channel, "
          "input per tensor, uint8 with a zero point).", ""]
    names = [n for n in args.networks.split(",") if n and os.path.exists(os.path.join(ROOT, "weights", n + ".h5"))]
    sections = ([] if args.no_layers else [(L, LAYERS)]) + ([(network_table(names, args), NETWORKS_TABLE)]
                                                            if names else [])
    for lines, marks in sections:                # each between its markers; the rest of --out kept
        print("\n".join(lines))
        if args.out:
            write_section(args.out, lines, *marks)


def int8_layer_row(w, x1, stride, ref):
    """``(row, layer)``: the int8 version of the conv ``w`` (input range: min/max of ``x1``, NHWC) and
    its per-layer table entry (counts in millions, error against ``ref`` when given)."""
    import numpy as np
    import tabconv_np
    from tabconv_np.int8 import Int8Conv2d, activation_qparams
    from tabconv_np.layers import Conv2d
    from tabconv_np.network import Network
    Co, C = w.shape[:2]
    conv = Conv2d(C, Co, 3, stride, 1, bias=False)
    conv.params["weight"][...] = w
    q8 = Int8Conv2d.from_conv(conv, *activation_qparams(x1.min(), x1.max()))
    H = x1.shape[1]
    c = tabconv_np.count_ops(Network(q8, (C, H, H)), (C, H, H)).total
    y = q8.forward(x1, "NHWC")
    err = float(np.abs(y - ref).max() / np.abs(ref).max()) if ref is not None else None
    return {"mults": (c["int8_macs"] + c["quant_ops"] + c["dequant_mults"]) / 1e6,
            "adds": (c["int8_macs"] + c["zp_adds"]) / 1e6, "err": err, "t": {}}, q8


def shipped_data(net, calib, seed=0):
    """``(calibration images, test images, test labels, test source)`` of a shipped network: a seeded
    subset of ``calib`` training images; the shipped test sample (Fashion-MNIST) or the MNIST test subset."""
    import numpy as np
    from tabconv_np.data import load_dataset
    name = net.meta.get("dataset", "fashion-mnist")
    xtr, _ = load_dataset(name, "train")
    xc = xtr[np.sort(np.random.default_rng(seed).choice(len(xtr), min(calib, len(xtr)), replace=False))]
    test = "sample" if name == "fashion-mnist" else name
    xt, yt = load_dataset(test, "test")
    return xc, xt, yt, f"{test}/test"


#: ResNet-18's switches with the stem conv and the classifier kept exact.
_INNER = [0, 1, 1, 1, 1, 1, 1, 1, 1, 0]
#: Compression methods of the network table: (label, convert() settings, own op units (quantity,
#: label), the networks it runs on: a name prefix, or None for all).  LCNN and RSDTR count every
#: multiply as a MAC (the ``multiplies`` convention, what the LCNN paper counts); RSDTR converts the
#: 3x3 convs inside residual blocks, as its authors do.
COMPRESSION = [
    ("int8", dict(method="int8"), ("int8_macs", "int8 MACs"), None),
    ("int8", dict(method="int8", range_rule="percentile", percentile=99.99), ("int8_macs", "int8 MACs"), None),
    ("int8", dict(method="int8", activations="symmetric"), ("int8_macs", "int8 MACs"), None),
    ("lcnn", dict(method="lcnn", atoms=32, sparsity=2, refine=None, switches=_INNER), ("macs", "MACs"), "resnet18"),
    ("lcnn", dict(method="lcnn", atoms=32, sparsity=2, refine="exact", switches=_INNER), ("macs", "MACs"), "resnet18"),
    ("lcnn", dict(method="lcnn", atoms=64, sparsity=3, refine="exact", switches=_INNER), ("macs", "MACs"), "resnet18"),
    ("rsdtr", dict(method="rsdtr", eps=0.3, convs="blocks", refine=None), ("macs", "MACs"), "resnet"),
    ("rsdtr", dict(method="rsdtr", eps=0.5, convs="blocks", refine=None), ("macs", "MACs"), "resnet"),
    ("rsdtr", dict(method="rsdtr", eps=0.5, convs="blocks", refine="exact"), ("macs", "MACs"), "resnet"),
    ("lowrank", dict(method="lowrank", form="spatial", energy=0.7, switches=_INNER), ("macs", "MACs"), "resnet18"),
    ("lowrank", dict(method="lowrank", form="tucker2", energy=0.7, switches=_INNER), ("macs", "MACs"), "resnet18"),
    ("binary", dict(method="binary"), ("adds", "adds"), "resnet18"),
    ("binary", dict(method="binary", refine="exact"), ("adds", "adds"), "resnet18"),
    ("binary", dict(method="binary", activations="binary", refine="exact"), ("popcounts", "popcounts"), "resnet18"),
    ("ternary", dict(method="ternary"), ("adds", "adds"), "resnet18"),
    ("ternary", dict(method="ternary", refine="exact"), ("adds", "adds"), "resnet18"),
    ("ternary", dict(method="ternary", activations="binary", refine="exact"), ("popcounts", "popcounts"), "resnet18"),
    ("channels", dict(method="channels", keep=0.5), ("macs", "MACs"), "resnet"),
    ("channels", dict(method="channels", keep=0.25), ("macs", "MACs"), "resnet"),
]


def network_table(names, args):
    """Markdown lines of the compression methods on the shipped networks ``names`` (see the module docstring)."""
    import warnings

    import numpy as np
    import tabconv_np
    from tabconv_np.conversion import convert
    from tabconv_np.ops import count_ops
    batches = args.batch_list
    L = ["## Compression methods on shipped networks", "",
         f"Generated by `python bench/methods.py --batches {args.batches} --threads {args.threads} --calib "
         f"{args.calib} --networks {','.join(names)}{' --no-layers' if args.no_layers else ''}`: each method calibrated on {args.calib} training images (seeded subset), evaluated "
         "on the shipped test sample. Retention = accuracy / exact accuracy; agreement = share of test "
         "images given the exact network's class. Own units: the method's operations (per image); float "
         "MACs: those left (conv + linear, per image); storage: every parameter array. Time: median of "
         f"{args.repeats} interleaved samples of both networks through a prepared plan "
         f"(`tabconv_np.prepare`), as a ratio to the exact network in the same run (< 1: faster), "
         f"{args.threads} thread(s).", "",
         "| network | data | method | settings | accuracy | exact accuracy | retention | agreement | own units (M) "
         "| float MACs (M) | storage (MiB) | " + " | ".join(f"time b{b} / exact" for b in batches) + " |",
         "|---|---|---|---|---:|---:|---:|---:|---|---:|---:|" + "---:|" * len(batches)]
    rng = np.random.default_rng(0)
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = tabconv_np.load(os.path.join(ROOT, "weights", name + ".h5"))
        xc, xt, yt, source = shipped_data(net, args.calib)
        exact_pred = net.predict(xt).argmax(1)
        exact_acc = float(np.mean(exact_pred == yt))
        plans = {"exact": tabconv_np.prepare(net)}
        rows = []
        for label, settings, (unit, unit_label), only in COMPRESSION:
            if only and not name.startswith(only):
                continue
            res = convert(net, xc, progress=False, **settings)
            pred = res.network.predict(xt).argmax(1)
            t = count_ops(res.network).total
            shown = {k: v for k, v in settings.items() if k not in ("method", "switches")}
            rows.append([name, source, label, ", ".join(f"{k}={v}" for k, v in shown.items()) or "defaults",
                         f"{np.mean(pred == yt):.2%}", f"{exact_acc:.2%}", f"{np.mean(pred == yt) / exact_acc:.3f}",
                         f"{np.mean(pred == exact_pred):.3f}", f"{t[unit] / 1e6:.2f} {unit_label}",
                         f"{t['macs'] / 1e6:.2f}", f"{t['storage_bytes'] / 2 ** 20:.2f}"])
            plans[len(rows) - 1] = tabconv_np.prepare(res.network)
        times = {}
        for b in batches:
            x = net.normalize(xt[rng.choice(len(xt), b, replace=False)])
            fns = {k: (lambda p: lambda: p(x))(p) for k, p in plans.items()}
            t = time_round_robin(fns, args.repeats, warmup=1, min_sample=0.05, pause=0.0)
            times[b] = {k: t[k]["median"] / t["exact"]["median"] for k in fns}
        exact_mib = count_ops(net).total["storage_bytes"] / 2 ** 20
        L.append(f"| {name} | {source} | exact | float32 | {exact_acc:.2%} | {exact_acc:.2%} | 1.000 | 1.000 | – "
                 f"| {count_ops(net).total['macs'] / 1e6:.2f} | {exact_mib:.2f} | " + " | ".join("1.00" for _ in batches) + " |")
        for i, r in enumerate(rows):
            L.append("| " + " | ".join(r) + " | " + " | ".join(f"{times[b][i]:.2f}" for b in batches) + " |")
            print(L[-1], file=sys.stderr, flush=True)
    L += ["", "int8: weights int8 per output channel in [-127, 127], inputs 8-bit per tensor (uint8 with a "
          "zero point unless symmetric), ranges by min/max or percentile on the calibration images, BN folded "
          "first, every conv and the classifier converted; int32 sums requantised by float scales "
          "(`tabconv_np.kernels.int8_kernels`). Exact storage counts BN parameters too (folded away in "
          "the int8 network).", "",
          "binary, ternary: weights per output filter as bits (XNOR-Net's sign and mean |W|; TWN's 0.7 mean |W| "
          "threshold), the stem conv and the classifier float (ends='exact'); own units: adds (float inputs: "
          "one per weight) or popcounts of 64-bit words (binary inputs, as many XORs; ternary also ANDs); "
          "refine=exact refits each channel's scale and bias.", ""]
    return L


if __name__ == "__main__":
    main(parse_args())
