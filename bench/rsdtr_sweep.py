"""RSDTR eps sweep on the shipped ResNets: PCR, FCR, MACs and accuracy per relative error eps_p.

Usage::

    python bench/rsdtr_sweep.py [--networks resnet20_fashion-mnist,...] [--eps 0.1,0.2,0.3,0.4,0.5]
                                [--calib 500] [--out docs/methods.md]

For each shipped network and each ``eps_p``, the 3x3 convolutions inside the
residual blocks are decomposed by TR-SVD (``convert(method="rsdtr",
convs="blocks")``, as the authors' code does: the stem, 1x1 shortcuts and the
classifier stay exact; no classifier refit) in three variants:

* ``keep``: the package's default, a ring with more parameters or MACs than its
  dense kernel stays exact (``larger="keep"``);
* ``keep + refit``: the same, with the last core and the bias refit by least
  squares to the exact network's outputs on ``--calib`` training images (a
  seeded subset; ``refine="exact"``);
* ``all rings``: every block conv decomposed whatever its size
  (``larger="convert"``), the paper's plain decomposition without fine-tuning.

Columns: PCR and FCR as the paper defines them
(``tabconv_np.conversion.rsdtr.compression_ratios``: whole network, exact
parameters / converted parameters, exact MACs / converted MACs, BN folded in
both), parameters and MACs per image in the ``macs`` convention of
``tabconv_np.ops`` (conv + linear multiply-adds; a ring counts its four
sublayers), accuracy on the shipped 1000-image Fashion-MNIST test sample and
its drop from the exact network's.  Decompositions do not depend on the data,
so each (layer, eps) is computed once per run and shared by the variants.

Rows are cached in ``bench/_cache/rsdtr_sweep/<network>.json`` (delete to
recompute).  The markdown section is printed and written into ``--out``
between the markers ``<!-- rsdtr_sweep: begin -->`` and ``<!-- rsdtr_sweep:
end -->`` (appended at the end when the markers are absent).
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from methods import shipped_data  # noqa: E402
from tree_network import make_cache_dir, write_section  # noqa: E402

NETWORKS = ("resnet20_fashion-mnist", "resnet18-paper_fashion-mnist", "resnet34-paper_fashion-mnist")
#: (label, convert() settings of the variant)
VARIANTS = (("keep", dict(refine=None, larger="keep")),
            ("keep + refit", dict(refine="exact", larger="keep")),
            ("all rings", dict(refine=None, larger="convert")))
BEGIN, END = "<!-- rsdtr_sweep: begin -->", "<!-- rsdtr_sweep: end -->"
CACHE = os.path.join(ROOT, "bench", "_cache", "rsdtr_sweep")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--eps", default="0.1,0.2,0.3,0.4,0.5")
    p.add_argument("--calib", type=int, default=500, help="calibration (training) images of the refit")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "methods.md"))
    a = p.parse_args(argv)
    a.eps_list = [float(v) for v in a.eps.split(",") if v]
    if not a.eps_list or not all(0 < e < 1 for e in a.eps_list):
        p.error(f"--eps: values in (0, 1), got {a.eps!r}")
    return a


def share_decompositions():
    """Make :func:`tabconv_np.conversion.rsdtr.decompose` remember its results for this run
    (keyed by the kernel's bytes and eps): the variants decompose the same kernels."""
    import hashlib
    import numpy as np
    from tabconv_np.conversion import rsdtr
    if getattr(rsdtr.decompose, "shared", False):
        return
    original, memo = rsdtr.decompose, {}

    def decompose(W, eps):
        W = np.ascontiguousarray(W, np.float64)
        key = (hashlib.sha256(W.tobytes()).hexdigest(), W.shape, float(eps))
        if key not in memo:
            memo[key] = original(W, eps)
        cores, info = memo[key]
        return cores, dict(info)
    decompose.shared = True
    rsdtr.decompose = decompose


def sweep(name, args):
    """Rows (dicts) of network ``name``: the exact network, then every eps and variant."""
    import warnings

    import numpy as np
    import tabconv_np
    from tabconv_np.ops import count_ops
    make_cache_dir(CACHE)
    path = os.path.join(CACHE, name + ".json")
    cached = {}
    if os.path.exists(path):
        with open(path) as f:
            cached = json.load(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = tabconv_np.load(os.path.join(ROOT, "weights", name + ".h5"))
    xc, xt, yt, source = shipped_data(net, args.calib)
    exact_acc = float(np.mean(net.predict(xt).argmax(1) == yt))
    t = count_ops(tabconv_np.fold_batchnorm(net)).total
    rows = [{"network": name, "data": source, "eps": None, "variant": "exact", "pcr": 1.0, "fcr": 1.0,
             "params": t["params"], "macs": t["macs"], "accuracy": exact_acc, "exact_accuracy": exact_acc,
             "rings": 0, "block_convs": None}]
    for eps in args.eps_list:
        done = {}
        for label, variant in VARIANTS:
            key = f"eps={eps}|{label}|calib={args.calib}"
            if key not in cached:
                cached[key] = _variant_row(net, name, source, eps, label, variant, done, xc, xt, yt, exact_acc)
                with open(path, "w") as f:
                    json.dump(cached, f, indent=1)
                c = cached[key]
                print(f"{name} eps {eps} {label}: PCR {c['pcr']:.2f} FCR {c['fcr']:.2f} acc {c['accuracy']:.3f} "
                      f"rings {c['rings']}/{c['block_convs']} ({c['seconds']:.0f} s)", file=sys.stderr, flush=True)
            rows.append(cached[key])
            done[label] = cached[key]
    return rows


def _variant_row(net, name, source, eps, label, variant, done, xc, xt, yt, exact_acc):
    """The row of one (eps, variant).  Only the refit reads the calibration images (the
    decomposition is data-free: the other variants walk 8 of them).  A network that is the exact
    one (no ring kept) or the same as the ``keep`` variant's (no layer kept there) is not
    evaluated again: its accuracy is copied."""
    import warnings

    import numpy as np
    from tabconv_np.conversion import convert
    from tabconv_np.conversion.rsdtr import compression_ratios
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = convert(net, xc if variant["refine"] else xc[:8], method="rsdtr", eps=eps, convs="blocks",
                      refit_classifier=False, progress=False, **variant)
    r = compression_ratios(res.network, res.exact)
    decomposed = [rec for rec in res.layers if "ranks" in rec]
    rings = sum("kept" not in rec for rec in decomposed)
    keep = done.get("keep")
    if rings == 0:
        acc = exact_acc
    elif label == "all rings" and keep is not None and keep["rings"] == rings:
        acc = keep["accuracy"]
    else:
        acc = float(np.mean(res.network.predict(xt).argmax(1) == yt))
    return {"network": name, "data": source, "eps": eps, "variant": label, "pcr": r["pcr"], "fcr": r["fcr"],
            "params": r["params"], "macs": r["macs"], "accuracy": acc, "exact_accuracy": exact_acc,
            "rings": rings, "block_convs": len(decomposed), "seconds": time.perf_counter() - t0}


def section(all_rows, args):
    """The markdown section (a list of lines) of the sweep's rows."""
    L = ["## RSDTR: eps_p sweep on the shipped ResNets (PCR, FCR, MACs, accuracy)", "",
         f"Generated by `python bench/rsdtr_sweep.py --networks {','.join(dict.fromkeys(r['network'] for r in all_rows))} "
         f"--eps {','.join(map(str, args.eps_list))} --calib {args.calib}`. The 3x3 convolutions inside the "
         "residual blocks are decomposed by TR-SVD at relative error eps_p with the paper's search over "
         "mode shifts and r0 divisors (`method=\"rsdtr\", convs=\"blocks\"`: the stem, the shortcuts and the "
         "classifier stay exact, as in the authors' code; no classifier refit). Variants: *keep* = the "
         "package's default keep-exact rule (a ring with more parameters or MACs than its dense kernel "
         "stays exact); *keep + refit* = the same with the last core and the bias refit by least squares "
         f"to the exact network's outputs on {args.calib} training images (`refine=\"exact\"`); *all rings* "
         "= every block conv decomposed whatever its size (`larger=\"convert\"`), the paper's "
         "decomposition before fine-tuning. PCR = exact parameters / converted parameters, FCR = exact "
         "MACs / converted MACs, whole network, BN folded in both "
         "(`tabconv_np.conversion.rsdtr.compression_ratios`); MACs per image in the `macs` convention "
         "(conv + linear multiply-adds; a ring counts its four sublayers). Accuracy: the shipped "
         "1000-image Fashion-MNIST test sample (one image = 0.1 point); drop in points from the exact "
         "network. Rings: block convs converted / block convs. At small eps_p the trained 3x3 kernels "
         "(nearly full rank) give rings larger than the kernels, so *keep* converts few or none.", "",
         "| network | eps_p | variant | rings | params (M) | PCR | MACs (M) | FCR | accuracy | drop (pts) |",
         "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in all_rows:
        eps = "–" if r["eps"] is None else f"{r['eps']:g}"
        rings = "–" if r["block_convs"] is None else f"{r['rings']}/{r['block_convs']}"
        L.append(f"| {r['network']} | {eps} | {r['variant']} | {rings} | {r['params'] / 1e6:.3f} | "
                 f"{r['pcr']:.2f} | {r['macs'] / 1e6:.2f} | {r['fcr']:.2f} | {r['accuracy']:.1%} | "
                 f"{100 * (r['exact_accuracy'] - r['accuracy']):+.1f} |")
    L += ["", "Published (Gabor & Zdunek, arXiv 2405.10802): ResNet-20 on CIFAR-10, PCR 3.5 and FCR 1.19 "
          "with an accuracy drop of 0.2-1.1% after fine-tuning from the decomposed factors (lr 0.01, "
          "160 epochs); none of the rows above is fine-tuned. MACs of He et al.'s CIFAR ResNets at "
          "3x32x32 (`tabconv_np.ops`, `macs`): ResNet-20 40.55 M, ResNet-32 68.86 M, ResNet-56 "
          "125.49 M; the shipped ResNet-20 sees 1x28x28 Fashion-MNIST images, hence fewer MACs."]
    return L


def main(args):
    from threadpoolctl import threadpool_limits
    import tabconv_np
    tabconv_np.set_num_threads(1)
    share_decompositions()
    names = [n for n in args.networks.split(",")
             if n and os.path.exists(os.path.join(ROOT, "weights", n + ".h5"))]
    rows = []
    with threadpool_limits(1):
        for name in names:
            rows += sweep(name, args)
    lines = section(rows, args)
    print("\n".join(lines))
    if args.out:
        write_section(args.out, lines, BEGIN, END)


if __name__ == "__main__":
    main(parse_args())
