"""Magnitude pruning of the shipped ResNet-18: accuracy, MACs and latency against sparsity.

Usage::

    python bench/pruning.py [--pruned 0.5,0.7,0.8,0.9,0.95] [--threads 1] [--batch 32] [--repeats 5]

Every conv but the stem pruned to the given fraction (``convert(..., method="prune")``, weights
only, no refit), evaluated on the shipped 1000-image Fashion-MNIST test sample; MACs in the
``macs`` convention (only stored weights multiply); time = median of ``--repeats`` interleaved
samples of ``predict``-sized batches, as a ratio to the exact network's prepared plan
(``tabconv_np.prepare``) in the same run.  Prints markdown rows.
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
    a = p.parse_args(argv)
    import numpy as np
    import tabconv_np
    from tabconv_np.conversion import convert
    from tabconv_np.data import load_dataset
    tabconv_np.set_num_threads(a.threads)
    net = tabconv_np.load(os.path.join(ROOT, "weights", "resnet18-paper_fashion-mnist.h5"))
    xc, _ = load_dataset("sample", "train", limit=20)
    xt, yt = load_dataset("sample", "test")
    x = net.normalize(xt[:a.batch])
    exact = tabconv_np.prepare(net)
    macs = tabconv_np.count_ops(net).total["macs"]
    print(f"exact {np.mean(net.predict(xt).argmax(1) == yt):.1%}, {a.threads} thread(s), batch {a.batch}\n")
    print("| pruned | accuracy | MACs | time / exact plan |\n|---:|---:|---:|---:|")
    for f in (float(v) for v in a.pruned.split(",")):
        res = convert(net, xc, method="prune", pruned=f, switches=[0] + [1] * 9, progress=False)
        acc = np.mean(res.network.predict(xt).argmax(1) == yt)
        t = time_round_robin({"exact": lambda: exact(x), "pruned": lambda: res.network(x)}, a.repeats,
                             warmup=1, min_sample=0.05, pause=0.0)
        print(f"| {f:.0%} | {acc:.1%} | {tabconv_np.count_ops(res.network).total['macs'] / macs:.2f}x | "
              f"{t['pruned']['median'] / t['exact']['median']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
