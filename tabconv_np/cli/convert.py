"""``tabconv convert``: a network file to a table network file (TabConv PQ tables or hash trees)."""
import json

import numpy as np

from ..data import load_dataset
from ..errors import ConfigError
from ..demo import parse_setting
from ..io import load, save
from ..outputs import check_output


def add_parser(sub):
    c = sub.add_parser("convert", help="convert a network to table lookups (TabConv or hash trees)")
    c.add_argument("model", help="a tabconv_np HDF5 file")
    c.add_argument("-o", "--output", required=True, help="where to write the table network (HDF5)")
    c.add_argument("--force", action="store_true", help="replace an existing output file")
    c.add_argument("--encoder", default="pq", choices=["pq", "tree"],
                   help="pq: the paper's product quantization, nearest of K prototypes (method "
                   "'tabconv'); tree: hash-tree encoding, K = 16, 8-bit tables (method 'maddness')")
    c.add_argument("--codebooks",
                   help="C per layer: an int, D/<ds> (ceil(D/ds) subspaces), a comma list per switch, "
                   "or PATTERN=VALUE items (e.g. 'layer1.*=D/28,*=D/128'); default 8 (pq) or "
                   "auto (tree: one codebook per input channel's window, per 4 inputs for 1x1 and linear)")
    c.add_argument("--prototypes",
                   help="pq only: K per layer (1..16384): an int, a comma list per switch, or "
                   "PATTERN=VALUE items; default 256")
    c.add_argument("--mask-rate", type=float, help="priority masking rate M in percent")
    c.add_argument("--switches", help="comma list of 0/1, one per switch (1: table)")
    c.add_argument("--calib", type=int, default=1000, help="calibration images (training split)")
    c.add_argument("--calib-dataset", help="data set of the calibration images (default: the shipped "
                   "sample for Fashion-MNIST models, else the model's data set)")
    c.add_argument("--calibrate", default="approx", choices=["approx", "exact"],
                   help="learn prototypes from the table network's activations (approx) or the exact ones")
    c.add_argument("--max-rows", type=int, default=50_000, help="k-means rows per layer (seeded subsample)")
    c.add_argument("--iters", type=int, help="pq only: Lloyd iterations (default 16)")
    c.add_argument("--no-refit", action="store_true", help="do not refit the final Linear")
    c.add_argument("--refine", choices=["exact", "local", "none"],
                   help="least-squares table refinement toward the exact network (default: none for "
                   "pq, the authors' plain tables; exact for tree)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run)
    return c


def calibration_images(net, dataset, n, seed):
    """``n`` training images for calibration: the sample's, or a seeded subset of ``dataset``.

    ``dataset=None``: the shipped sample for Fashion-MNIST models (and models
    that do not say), else the model's data set.  Returns ``(images, dataset)``.
    """
    if dataset is None:
        ds = net.meta.get("dataset")
        dataset = "sample" if ds in (None, "fashion-mnist", "sample") else ds
    x, _ = load_dataset(dataset, "train")
    if n is not None and n < len(x):
        idx = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
        x = x[idx]
    return x, dataset


def run(args):
    # imported here, not at the top: convert loads Numba and SciPy, which every other
    # command would pay for at start-up
    from ..conversion import convert, op_reduction
    tree = args.encoder == "tree"
    if tree and (args.prototypes is not None or args.iters is not None):
        raise ConfigError("tabconv convert: --prototypes and --iters apply to --encoder pq only "
                          "(a hash tree has 16 leaves)")
    check_output(args.output, overwrite=args.force, inputs=[args.model])
    net = load(args.model)
    xc, dataset = calibration_images(net, args.calib_dataset, args.calib, args.seed)
    own = {"codebooks": parse_setting(args.codebooks or ("auto" if tree else "8"), str)}
    if not tree:
        own.update(prototypes=parse_setting(args.prototypes or "256", int),
                   iters=16 if args.iters is None else args.iters)
    refine = args.refine or ("exact" if tree else "none")
    res = convert(net, xc, method="maddness" if tree else "tabconv", switches=args.switches,
                  mask_rate=args.mask_rate, refit_classifier=not args.no_refit, seed=args.seed,
                  progress=None if not args.json else False, calibrate=args.calibrate,
                  max_rows=args.max_rows, refine=None if refine == "none" else refine, **own)
    res.network.meta[res.method.name]["calibration_dataset"] = dataset
    save(res.network, args.output, overwrite=args.force)
    red = op_reduction(res.network, res.exact)
    if args.json:
        d = res.to_dict()
        d.update(output=args.output, op_reduction=red, calibration_dataset=dataset)
        print(json.dumps(d))
        return
    print(res.summary())
    print(f"op reduction: paper {100 * red['paper']['reduction']:.2f}% "
          f"(lookups+adds+exact MACs vs exact MACs), full {100 * red['full']['reduction']:.2f}% "
          f"(all arithmetic, encoding included)")
    st = red["storage"]
    print(f"storage: {st['network_bytes'] / 2**20:.1f} MiB (exact network {st['exact_network_bytes'] / 2**20:.1f} MiB)")
    print(f"calibrated on {len(xc)} {dataset} training images in {res.seconds:.1f} s; wrote {args.output}")
