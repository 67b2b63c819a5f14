"""Magnitude and channel pruning of the shipped ResNet-18: accuracy, MACs, parameters and latency.

Usage::

    python bench/pruning.py [--pruned 0.5,0.7,0.8,0.9,0.95] [--keep 0.75,0.5,0.25] [--threads 1]
                            [--batch 32] [--repeats 5] [--network resnet18-paper_fashion-mnist]
                            [--calib 1000] [--validate]

``--network``: a shipped network (weights/<name>.h5; an empty ``--pruned`` or ``--keep`` skips
that table).  Every conv but the stem pruned to the given fraction (``convert(..., method="prune")``, weights
only, no refit), evaluated on the shipped 1000-image Fashion-MNIST test sample; MACs in the
``macs`` convention (only stored weights multiply); time = median of ``--repeats`` interleaved
samples of ``predict``-sized batches, as a ratio to the exact network's prepared plan
(``tabconv_np.prepare``) in the same run.  Prints markdown rows.

Then channel pruning (``method="channels"``, the defaults: greedy selection, least-squares
rebuild, classifier refit): ``--keep`` of the input channels of every block's conv2 (so of
conv1's filters; in a plain chain such as NIN, of every conv after the first), calibrated on
the first ``--calib`` images of the shipped 1000-image training sample; the pruned network is
smaller dense layers, timed through its own prepared plan against the exact one.  ``weights``:
stored float parameters (a sparse layer's stored weights, not its indices), against the
BN-folded exact network's.

``--validate``: instead, the channel method's settings (selection, ridge) on 2000 training
images outside the calibration sample (accuracy and the logits' relative L2 error to the exact
network's), and the same selection with the channels only dropped; the defaults were picked
from these rows, never from test images.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tree_network import time_round_robin  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pruned", default="0.5,0.7,0.8,0.9,0.95")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--keep", default="0.75,0.5,0.25")
    p.add_argument("--validate", action="store_true")
    p.add_argument("--network", default="resnet18-paper_fashion-mnist")
    p.add_argument("--calib", type=int, default=1000)
    a = p.parse_args(argv)
    if a.validate:
        return validate(a)
    import numpy as np
    import tabconv_np
    from tabconv_np.conversion import convert
    from tabconv_np.data import load_dataset
    tabconv_np.set_num_threads(a.threads)
    net = tabconv_np.load(os.path.join(ROOT, "weights", a.network + ".h5"))
    xc, _ = load_dataset("sample", "train", limit=20)
    xt, yt = load_dataset("sample", "test")
    x = net.normalize(xt[:a.batch])
    exact = tabconv_np.prepare(net)
    macs = tabconv_np.count_ops(net).total["macs"]
    print(f"exact {np.mean(net.predict(xt).argmax(1) == yt):.1%}, {a.threads} thread(s), batch {a.batch}\n")
    base = weights(tabconv_np.fold_batchnorm(net))
    if a.pruned:
        print("| pruned | accuracy | MACs | time / exact plan | weights |\n|---:|---:|---:|---:|---:|")
    for f in (float(v) for v in a.pruned.split(",") if v):
        res = convert(net, xc, method="prune", pruned=f, switches={"conv1": 0}, progress=False)
        acc = np.mean(res.network.predict(xt).argmax(1) == yt)
        t = time_round_robin({"exact": lambda: exact(x), "pruned": lambda: res.network(x)}, a.repeats,
                             warmup=1, min_sample=0.05, pause=0.0)
        print(f"| {f:.0%} | {acc:.1%} | {tabconv_np.count_ops(res.network).total['macs'] / macs:.2f}x | "
              f"{t['pruned']['median'] / t['exact']['median']:.2f} | "
              f"{weights(res.network) / base:.2f}x |", flush=True)
    xc, _ = load_dataset("sample", "train", limit=a.calib)
    if a.keep:
        print("\n| keep (conv inputs) | accuracy | MACs | time / exact plan | weights |\n"
              "|---:|---:|---:|---:|---:|")
    for f in (float(v) for v in a.keep.split(",") if v):
        res = convert(net, xc, method="channels", keep=f, progress=False)
        acc = np.mean(res.network.predict(xt).argmax(1) == yt)
        plan = tabconv_np.prepare(res.network)
        t = time_round_robin({"exact": lambda: exact(x), "channels": lambda: plan(x)}, a.repeats,
                             warmup=1, min_sample=0.05, pause=0.0)
        print(f"| {f:.0%} | {acc:.1%} | {tabconv_np.count_ops(res.network).total['macs'] / macs:.2f}x | "
              f"{t['channels']['median'] / t['exact']['median']:.2f} | {weights(res.network) / base:.2f}x |",
              flush=True)


def weights(net):
    """Stored float parameters of ``net`` (a sparse layer's values, not its indices)."""
    return sum(v.size for _, m in net.body.modules() for v in m.learnable().values() if v.dtype.kind == "f")


def validate(a):
    """Rows of the channel method's settings on held-out training images (module docstring)."""
    import numpy as np
    import tabconv_np
    from tabconv_np.conversion import ChannelSettings, convert
    from tabconv_np.data import load_dataset
    net = tabconv_np.load(os.path.join(ROOT, "weights", "resnet18-paper_fashion-mnist.h5"))
    xc, _ = load_dataset("sample", "train")
    xf, yf = load_dataset("fashion-mnist", "train")
    seen = {im.tobytes() for im in xc}
    rest = np.array([i for i in range(len(xf)) if xf[i].tobytes() not in seen])
    sel = np.sort(np.random.default_rng(1).choice(rest, 2000, replace=False))
    xv, yv = xf[sel], yf[sel]
    ze = net.predict(xv)
    print(f"exact {np.mean(ze.argmax(1) == yv):.1%} on 2000 held-out training images\n")
    print("| keep | select | ridge | accuracy | logits' rel. error |\n|---:|---|---:|---:|---:|")
    for f in (float(v) for v in a.keep.split(",")):
        for select in ("greedy", "lasso"):
            for ridge in ((1e-6, 1e-4, 1e-3, 1e-2) if select == "greedy" else (ChannelSettings.ridge,)):
                res = convert(net, xc, method="channels", keep=f, select=select, ridge=ridge, progress=False)
                z = res.network.predict(xv)
                print(f"| {f:.0%} | {select} | {ridge:g} | {np.mean(z.argmax(1) == yv):.1%} | "
                      f"{np.linalg.norm(z - ze) / np.linalg.norm(ze):.4f} |", flush=True)
        res = convert(net, xc, method="channels", keep=f, refine=None, progress=False)
        z = res.network.predict(xv)
        print(f"| {f:.0%} | greedy, channels dropped (no rebuild) | - | {np.mean(z.argmax(1) == yv):.1%} | "
              f"{np.linalg.norm(z - ze) / np.linalg.norm(ze):.4f} |", flush=True)


if __name__ == "__main__":
    main()
