"""The README's low-rank table: each form and energy, with and without the output refit.

Usage::

    python bench/lowrank_forms.py [--calib 300] [--test 500]

The shipped ResNet-18 "paper" (Fashion-MNIST), stem and classifier exact
(switches ``0,1,1,1,1,1,1,1,1,0``), calibrated on the first ``--calib``
images of the shipped training sample and evaluated on the first ``--test``
of the shipped test sample; MACs in the ``macs`` convention.  Prints markdown
rows (about 5 minutes on 2 cores).
"""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calib", type=int, default=300)
    p.add_argument("--test", type=int, default=500)
    a = p.parse_args(argv)
    import tabconv_np
    from tabconv_np.conversion import convert
    from tabconv_np.data import load_dataset
    net = tabconv_np.load(os.path.join(ROOT, "weights", "resnet18-paper_fashion-mnist.h5"))
    xc, _ = load_dataset("sample", "train", limit=a.calib)
    xt, yt = load_dataset("sample", "test", limit=a.test)
    macs = tabconv_np.count_ops(net).total["macs"]
    print(f"exact: {np.mean(net.predict(xt).argmax(1) == yt):.1%}\n")
    print("| form | energy | refine | accuracy | MACs (macs convention) |\n|---|---:|---|---:|---:|")
    for form in ("svd", "spatial", "tucker2"):
        for energy in (0.9, 0.7):
            for refine in (None, "exact"):
                r = convert(net, xc, method="lowrank", form=form, rank="auto", energy=energy, refine=refine,
                            switches=[0, 1, 1, 1, 1, 1, 1, 1, 1, 0], progress=False)
                acc = np.mean(r.network.predict(xt).argmax(1) == yt)
                change = 1 - tabconv_np.count_ops(r.network).total["macs"] / macs
                print(f"| {form} | {energy} | {refine or 'none'} | {acc:.1%} | "
                      f"{abs(change):.0%} {'fewer' if change > 0 else 'more'} |", flush=True)


if __name__ == "__main__":
    main()
