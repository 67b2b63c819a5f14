"""int8 calibration: range rules compared on a validation split of training images, per-layer error.

Usage::

    python bench/int8_calibration.py [--model resnet18-paper_fashion-mnist] [--calib 1000] [--val 2000]
                                     [--settings minmax,percentile=99.99,percentile=99.999,symmetric]

Calibrates the int8 method on ``--calib`` training images (a seeded subset)
with each setting, and reports, per setting, the accuracy and the agreement
with the exact network's predictions on ``--val`` *other* training images
(the split the default is chosen on) and on the shipped test sample (reported,
not used for the choice); then, per layer, the calibrated input range and
the layer's relative error ``||int8 layer(x) - exact layer(x)|| / ||exact
layer(x)||`` on the first 200 calibration images (``x``: the layer's input in
the int8 network, so the error is the layer's own, not the accumulated one)
and the cosine similarity of each block's output to the exact network's.
"""
import argparse
import os
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from methods import shipped_data  # noqa: E402


def parse_settings(text):
    """``"minmax,percentile=99.99,symmetric"`` -> list of (label, convert() keyword arguments)."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == "symmetric":
            out.append((item, {"activations": "symmetric"}))
        elif item.startswith("percentile="):
            out.append((item, {"range_rule": "percentile", "percentile": float(item.split("=", 1)[1])}))
        else:
            out.append((item, {"range_rule": item}))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18-paper_fashion-mnist")
    p.add_argument("--calib", type=int, default=1000)
    p.add_argument("--val", type=int, default=2000)
    p.add_argument("--settings", default="minmax,percentile=99.99,percentile=99.999,symmetric")
    a = p.parse_args(argv)
    import numpy as np
    import tabconv_np
    from tabconv_np.conversion import convert
    from tabconv_np.data import load_dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = tabconv_np.load(os.path.join(ROOT, "weights", a.model + ".h5"))
    xc, xt, yt, source = shipped_data(net, a.calib)
    xtr, ytr = load_dataset(net.meta.get("dataset", "fashion-mnist"), "train")
    calib_idx = np.sort(np.random.default_rng(0).choice(len(xtr), min(a.calib, len(xtr)), replace=False))
    rest = np.setdiff1d(np.arange(len(xtr)), calib_idx)
    val = np.sort(np.random.default_rng(1).choice(rest, min(a.val, len(rest)), replace=False))
    xv, yv = xtr[val], ytr[val]
    ev, et = net.predict(xv).argmax(1), net.predict(xt).argmax(1)
    print(f"# int8 calibration of {a.model}: {len(xc)} calibration and {len(xv)} validation training images, "
          f"{len(xt)} {source} images\n")
    print(f"exact: validation accuracy {np.mean(ev == yv):.2%}, test accuracy {np.mean(et == yt):.2%}\n")
    print("| setting | val. accuracy | val. agreement | test accuracy | test agreement |")
    print("|---|---:|---:|---:|---:|")
    results = []
    for label, kw in parse_settings(a.settings):
        res = convert(net, xc, method="int8", progress=False, **kw)
        pv, pt = res.network.predict(xv).argmax(1), res.network.predict(xt).argmax(1)
        print(f"| {label} | {np.mean(pv == yv):.2%} | {np.mean(pv == ev):.3f} | {np.mean(pt == yt):.2%} | "
              f"{np.mean(pt == et):.3f} |", flush=True)
        results.append((label, res))
    print("\nPer layer: input range [lo, hi] and zero point z of the first setting; relative error of "
          "each setting's layer on its own input (calibration images)\n")
    print("| layer | range (" + results[0][0] + ") | z | " + " | ".join(f"rel. error {lab}" for lab, _ in results) + " |")
    print("|---|---|---:|" + "---:|" * len(results))
    for i, rec in enumerate(results[0][1].layers):
        lo, hi = rec["range"]
        errs = " | ".join(f"{r.layers[i]['rel_error']:.4f}" for _, r in results)
        print(f"| {rec['name']} | [{lo:.3g}, {hi:.3g}] | {rec['zero_point']} | {errs} |")
    print("\nCosine similarity of each switch's output to the exact network's (calibration images)\n")
    print("| switch | " + " | ".join(lab for lab, _ in results) + " |")
    print("|---|" + "---:|" * len(results))
    for j, name in enumerate(results[0][1].switches):
        print(f"| {name} | " + " | ".join(f"{r.final_similarities[j]:.5f}" for _, r in results) + " |")


if __name__ == "__main__":
    main()
