"""``tabconv convert``: a network file to a table network file (TabConv PQ tables or hash trees),
or, with ``--method``, to LCNN or RSDTR layers.

Everything is checked before the work starts (the output path, the settings,
the calibration data), and the effective settings, defaults included, are
printed first as the command line that would give them.
"""
import json
import shlex
import sys

import numpy as np

from ..errors import ConfigError, DataError
from ..demo import parse_setting
from ..io import load, save
from ..outputs import check_output
from ..report import command_line, reduction_lines
from ..userdata import command_images
from .options import add_data_options, count

#: The defaults of ``--encoder pq`` / ``tree`` that differ: the conversion methods' own defaults
#: (TabConvSettings, MaddnessSettings; not imported here, which would load Numba for every
#: command: tests/test_cli.py checks that they agree).
ENCODER_DEFAULTS = {"pq": {"codebooks": "8", "prototypes": "256", "iters": 16, "refine": "none"},
                    "tree": {"codebooks": "auto", "refine": "exact"}}


def add_parser(sub):
    c = sub.add_parser("convert", help="convert a network to table lookups (TabConv or hash trees)",
                       description="Convert a network file to table lookups, calibrated on training "
                       "images, and write the table network. Takes minutes on a ResNet-18 "
                       "(1,000 calibration images, 2 cores: about 1-2 min with --encoder tree, 1-4 min "
                       "with pq at the defaults; longer while the kernels compile on a first run).")
    c.add_argument("model", help="a tabconv_np HDF5 file")
    c.add_argument("-o", "--output", required=True, help="where to write the table network (HDF5)")
    c.add_argument("--force", action="store_true", help="replace an existing output file")
    c.add_argument("--encoder", default="pq", choices=["pq", "tree"],
                   help="pq: the paper's product quantization, nearest of K prototypes (method "
                   "'tabconv'); tree: hash-tree encoding, K = 16, 8-bit tables (method 'maddness'); "
                   "default: pq")
    c.add_argument("--codebooks",
                   help="C per layer: an int, D/<ds> (ceil(D/ds) subspaces), a comma list per switch, "
                   "or PATTERN=VALUE items (e.g. 'layer1.*=D/28,*=D/128'); default 8 (pq) or "
                   "auto (tree: one codebook per input channel's window, per 4 inputs for 1x1 and linear)")
    c.add_argument("--prototypes",
                   help="pq only: K per layer (1..16384): an int, a comma list per switch, or "
                   "PATTERN=VALUE items; default 256")
    c.add_argument("--method", choices=["lcnn", "rsdtr"],
                   help="another engine instead of the tables of --encoder: lcnn (a dictionary 1x1 conv "
                   "and sparse lookups, --atoms, --sparsity) or rsdtr (tensor-ring cores from the "
                   "weights, --eps); default: the tables")
    c.add_argument("--atoms",
                   help="lcnn only: the dictionary size k per layer (at most kh*kw*C_out): an int, a "
                   "comma list per switch, or PATTERN=VALUE items; default 32")
    c.add_argument("--sparsity",
                   help="lcnn only: s (index, coefficient) pairs per output channel and kernel "
                   "position (at most k), in the same forms; default 2")
    c.add_argument("--eps",
                   help="rsdtr only: the relative error eps_p of each kernel's TR-SVD, in (0, 1), in "
                   "the same forms (e.g. 'layer4.*=0.5,*=0.3'); default 0.3")
    c.add_argument("--convs", choices=["all", "blocks"],
                   help="rsdtr only: decompose every conv of a converted switch, or only the 3x3 "
                   "convs inside blocks as the authors do; default: all")
    c.add_argument("--mask-rate", type=float, metavar="M",
                   help="priority masking: keep exact the floor(M x switches / 100) switches whose "
                   "similarity to the exact network drops most (percent; default: no masking)")
    c.add_argument("--switches", help="comma list of 0/1, one per switch (1: table); default: all 1")
    c.add_argument("--calib", type=count(2), default=1000, metavar="N",
                   help="calibration images: a seeded subset of N training images (default: 1000)")
    add_data_options(c, "training split", "calibration", aliases=("--calib-dataset",))
    c.add_argument("--calibrate", default="approx", choices=["approx", "exact"],
                   help="learn prototypes from the table network's activations (approx, default) or "
                   "the exact ones")
    c.add_argument("--max-rows", type=count(2), default=50_000, metavar="ROWS",
                   help="k-means rows per layer (seeded subsample; default: 50000)")
    c.add_argument("--iters", type=count(0), help="pq only: Lloyd iterations (default: 16)")
    c.add_argument("--no-refit", action="store_true", help="do not refit the final Linear")
    c.add_argument("--refine", choices=["exact", "local", "none"],
                   help="least-squares table refinement toward the exact network (default: none for "
                   "pq, the authors' plain tables; exact for tree); lcnn: refit the coefficients "
                   "(default exact); rsdtr: refit the last core (default none); local: tables only")
    c.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    c.set_defaults(func=run)
    return c


#: The defaults of ``--method lcnn`` / ``rsdtr`` (LCNNSettings, RSDTRSettings; tests/test_cli.py
#: checks that they agree).
METHOD_DEFAULTS = {"lcnn": {"atoms": "32", "sparsity": "2", "refine": "exact"},
                   "rsdtr": {"eps": "0.3", "convs": "all", "refine": "none"}}
#: The options of each --method (the others are refused with it).
METHOD_OPTIONS = {"lcnn": ("atoms", "sparsity"), "rsdtr": ("eps", "convs")}
TABLE_OPTIONS = ("codebooks", "prototypes", "iters")


def _method_settings(args):
    """``(effective options, method's own settings)`` of a ``--method`` run; ConfigError for an
    option of another engine."""
    d = METHOD_DEFAULTS[args.method]
    own_opts = METHOD_OPTIONS[args.method]
    foreign = [o for o in TABLE_OPTIONS + sum(METHOD_OPTIONS.values(), ()) if o not in own_opts
               and getattr(args, o) is not None] + (["encoder"] if args.encoder != "pq" else [])
    if foreign:
        raise ConfigError(f"tabconv convert: --{', --'.join(foreign)} do(es) not apply to --method "
                          f"{args.method} (its options: --{', --'.join(own_opts)}, --refine)")
    if args.refine == "local":
        raise ConfigError(f"tabconv convert: --refine local applies to the tables only, not to "
                          f"--method {args.method}")
    out = {"method": args.method}
    out.update({o: getattr(args, o) or d[o] for o in own_opts})
    out["refine"] = args.refine or d["refine"]
    if args.method == "lcnn":
        own = {"atoms": parse_setting(out["atoms"], int), "sparsity": parse_setting(out["sparsity"], int)}
    else:
        own = {"eps": parse_setting(out["eps"], float), "convs": out["convs"]}
    own["refine"] = None if out["refine"] == "none" else out["refine"]
    return out, own


def effective(args):
    """The settings of a run, defaults filled in: ``{option name: value}`` in command-line order."""
    if getattr(args, "method", None):
        out = _method_settings(args)[0]
        out.update(calibrate=args.calibrate, max_rows=args.max_rows)
        return _common(args, out)
    d = ENCODER_DEFAULTS[args.encoder]
    out = {"encoder": args.encoder, "codebooks": args.codebooks or d["codebooks"]}
    if args.encoder == "pq":
        out.update(prototypes=args.prototypes or d["prototypes"],
                   iters=d["iters"] if args.iters is None else args.iters)
    out.update(refine=args.refine or d["refine"], calibrate=args.calibrate, max_rows=args.max_rows)
    return _common(args, out)


def _common(args, out):
    """``out`` with the options every engine shares (masking, switches, refit, calibration, seed)."""
    if args.mask_rate is not None:
        out["mask_rate"] = f"{args.mask_rate:g}"
    if args.switches is not None:
        out["switches"] = args.switches
    if args.no_refit:
        out["no_refit"] = True
    out.update(calib=args.calib, seed=args.seed)
    return out


def run(args):
    # imported here, not at the top: convert loads Numba and SciPy, which every other
    # command would pay for at start-up
    from ..conversion import convert, op_reduction
    tree = args.encoder == "tree"
    if args.method:
        method, own = args.method, _method_settings(args)[1]
    else:
        if tree and (args.prototypes is not None or args.iters is not None):
            raise ConfigError("tabconv convert: --prototypes and --iters apply to --encoder pq only "
                              "(a hash tree has 16 leaves)")
        method = "maddness" if tree else "tabconv"
    opts = effective(args)
    if not args.method:
        own = {"codebooks": parse_setting(opts["codebooks"], str),
               "refine": None if opts["refine"] == "none" else opts["refine"]}
        if not tree:
            own.update(prototypes=parse_setting(opts["prototypes"], int), iters=opts["iters"])
    check_output(args.output, overwrite=args.force, inputs=[args.model])
    net = load(args.model)
    xc, _, source = command_images(net, "tabconv convert", "train", args.dataset, args.data,
                                   args.data_dir, labels=False)
    if len(xc) < 2:
        raise DataError(f"tabconv convert: {source} holds {len(xc)} image(s); calibration needs at least 2")
    if args.calib < len(xc):
        xc = xc[np.sort(np.random.default_rng(args.seed).choice(len(xc), args.calib, replace=False))]
    where = f"--data {shlex.quote(args.data)}" if args.data else f"--dataset {source.split('/')[0]}"
    line = f"tabconv convert {shlex.quote(args.model)} -o {shlex.quote(args.output)} {command_line(opts)} {where}"
    print(f"settings: {line}", file=sys.stderr if args.json else sys.stdout, flush=True)
    res = convert(net, xc, method=method, switches=args.switches,
                  mask_rate=args.mask_rate, refit_classifier=not args.no_refit, seed=args.seed,
                  calibrate=args.calibrate, max_rows=args.max_rows, **own)
    res.network.meta[res.method.name]["calibration_dataset"] = source
    save(res.network, args.output, overwrite=args.force)
    red = op_reduction(res.network, res.exact)
    if args.json:
        d = res.to_dict()
        d.update(output=args.output, op_reduction=red, calibration_data=source, command_line=line)
        print(json.dumps(d))
        return
    print(res.summary())
    print("\n".join(reduction_lines(red)))
    print(f"calibrated on {len(xc)} {source} images in {res.seconds:.1f} s; wrote {args.output}")
