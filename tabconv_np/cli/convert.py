"""``tabconv convert``: a network file to a converted network file (tables, hash trees, low rank, ...).

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
from ..ops import count_ops
from ..report import binary_line, command_line, int8_line, reduction_lines
from ..userdata import command_images
from .options import add_data_options, count

#: Per ``--method``: its own options and their defaults, the conversion methods' own defaults
#: (TabConvSettings, MaddnessSettings, LowRankSettings; not imported here, which would load Numba
#: for every command: tests/test_cli.py checks that they agree).  An option given to a method
#: that does not list it is refused.
METHOD_DEFAULTS = {
    "tabconv": {"codebooks": "8", "prototypes": "256", "iters": 16, "refine": "none"},
    "maddness": {"codebooks": "auto", "refine": "exact"},
    "lowrank": {"rank": "auto", "energy": 0.95, "form": "svd", "refine": "exact", "macs": "none"},
    "int8": {"bits": "8", "activations": "asymmetric", "range_rule": "minmax", "percentile": "99.99",
             "min_images": 32},
    "lcnn": {"atoms": "32", "sparsity": "2", "refine": "exact"},
    "rsdtr": {"eps": "0.3", "convs": "all", "refine": "none"},
    "prune": {"pruned": "0.5", "scope": "layer"},
    "binary": {"activations": "float", "ends": "exact", "refine": "none"},
    "ternary": {"activations": "float", "ends": "exact", "refine": "none"},
    "channels": {"keep": "0.5", "select": "greedy", "refine": "exact"},
}
#: ``--encoder``'s names of the table methods.
ENCODERS = {"pq": "tabconv", "tree": "maddness"}
ENCODER_DEFAULTS = {e: METHOD_DEFAULTS[m] for e, m in ENCODERS.items()}
#: How each method option is read: per-layer values (``parse_setting`` of that kind) or one value.
PER_LAYER = {"codebooks": str, "prototypes": int, "rank": str, "bits": int, "activations": str.lower,
             "range_rule": str.lower, "percentile": float, "atoms": int, "sparsity": int, "eps": float,
             "pruned": float, "keep": float}


def add_parser(sub):
    c = sub.add_parser("convert", help="convert a network to table lookups, hash trees or low rank",
                       description="Convert a network file (table lookups, hash trees, low-rank "
                       "factors), calibrated on training images, and write the converted network. "
                       "Takes minutes on a ResNet-18 "
                       "(1,000 calibration images, 2 cores: about 1-2 min with --encoder tree, 1-4 min "
                       "with pq at the defaults; longer while the kernels compile on a first run).")
    c.add_argument("model", help="a tabconv_np HDF5 file")
    c.add_argument("-o", "--output", required=True, help="where to write the table network (HDF5)")
    c.add_argument("--force", action="store_true", help="replace an existing output file")
    c.add_argument("--method", choices=sorted(METHOD_DEFAULTS),
                   help="tabconv: the paper's PQ tables; maddness: hash trees and 8-bit tables; "
                   "lowrank: truncated SVD factors (--rank, --energy, --form); int8: post-training "
                   "quantisation, int8 weights per output channel, 8-bit inputs per tensor calibrated "
                   "on the training images (--bits, --activations, --range-rule, --percentile, "
                   "--min-images); lcnn: a dictionary 1x1 conv and sparse lookups (--atoms, "
                   "--sparsity); rsdtr: tensor-ring cores from the weights (--eps, --convs); "
                   "prune: magnitude pruning to sparse (CSR) convolutions (--pruned); binary, ternary: "
                   "weights as bits per output filter (XNOR-Net's sign and mean |W|; TWN's 0.7 mean |W| "
                   "threshold), inputs float or binary (--activations, --ends, --refine); "
                   "channels: channel pruning, the next conv rebuilt by least squares (--keep, --select); "
                   "default: from --encoder")
    c.add_argument("--encoder", choices=sorted(ENCODERS),
                   help="the table methods by their encoder: pq = --method tabconv (the default), "
                   "tree = --method maddness")
    c.add_argument("--codebooks",
                   help="C per layer: an int, D/<ds> (ceil(D/ds) subspaces), a comma list per switch, "
                   "or PATTERN=VALUE items (e.g. 'layer1.*=D/28,*=D/128'); default 8 (pq) or "
                   "auto (tree: one codebook per input channel's window, per 4 inputs for 1x1 and linear)")
    c.add_argument("--prototypes",
                   help="pq only: K per layer (1..16384): an int, a comma list per switch, or "
                   "PATTERN=VALUE items; default 256")
    c.add_argument("--rank", help="lowrank only: r per layer: an int, auto (by --energy), a comma list "
                   "per switch, or PATTERN=VALUE items; default auto")
    c.add_argument("--energy", type=float, help="lowrank only: with rank auto, the fraction of the "
                   "squared singular values kept, in (0, 1]; default 0.95")
    c.add_argument("--macs", type=float, help="lowrank only: a MAC budget instead of --rank: the converted "
                   "layers keep at most this fraction of their MACs, in (0, 1), ranks chosen by singular-value "
                   "energy per MAC (svd and spatial forms); default none")
    c.add_argument("--form", choices=["svd", "spatial", "tucker2"],
                   help="lowrank only: the decomposition: svd (conv to r channels + 1x1), spatial "
                   "(k x 1 then 1 x k) or tucker2 (1x1, core, 1x1); default svd")
    c.add_argument("--bits", help="int8 only: bits per layer, an int or PATTERN=VALUE items; 8 is the only "
                   "width supported; default 8")
    c.add_argument("--activations", help="int8: asymmetric (uint8 with a zero point) or symmetric "
                   "(int8 in [-127, 127]), one value or PATTERN=VALUE items; default asymmetric. binary, "
                   "ternary: float (weights only) or binary (inputs binarised: XNOR + popcount); default float")
    c.add_argument("--ends", choices=["exact", "binary"],
                   help="binary, ternary only: keep the network's first and last weight layers exact (as the "
                   "literature does; default) or convert them too")
    c.add_argument("--range-rule", help="int8 only: each layer's input range from the calibration "
                   "activations' minmax or percentile (see --percentile), one value or PATTERN=VALUE "
                   "items; default minmax")
    c.add_argument("--percentile", help="int8 only: P of --range-rule percentile (range from the 100-P to "
                   "the P percentile), in (50, 100], one value or PATTERN=VALUE items; default 99.99")
    c.add_argument("--min-images", type=count(2), metavar="N",
                   help="int8 only: refuse fewer calibration images than N (default: 32)")
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
    c.add_argument("--pruned", help="prune only: the fraction of each layer's weights set to zero, in "
                   "[0, 1): one value, a comma list per switch, or PATTERN=VALUE items; default 0.5")
    c.add_argument("--scope", choices=["layer", "global"],
                   help="prune only: --pruned of each layer's weights (layer), or of all the converted "
                   "layers' weights by one magnitude threshold (global); default layer")
    c.add_argument("--keep", help="channels only: the fraction of each pruned conv's input channels kept (the "
                   "filters of the conv before it go with them), in (0, 1]: one value, a comma list per "
                   "switch, or PATTERN=VALUE items; only the second conv of a pair in one chain is pruned "
                   "(in a ResNet block: conv2), the others stay exact; default 0.5")
    c.add_argument("--select", choices=["greedy", "lasso"],
                   help="channels only: how the kept channels are chosen: greedy (backward elimination) "
                   "or lasso (He et al.'s LASSO); default greedy")
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
                   help="least-squares refinement toward the exact network (default: none for "
                   "pq, the authors' plain tables; exact for tree and lowrank; lcnn: refit the "
                   "coefficients (default exact); rsdtr: refit the last core (default none); binary, ternary: "
                   "refit each output channel's scale and bias (default none); channels: rebuild the pruned conv "
                   "on its kept channels (default exact; none: only drop channels); local: the tables only)")
    c.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    c.add_argument("--plan", metavar="PLAN.json",
                   help="a method and settings per switch, from a plan file (tabconv compare --budget "
                   "writes one); replaces --method and the method options")
    c.set_defaults(func=run)
    return c


def method_of(args):
    """The method name of ``--method`` / ``--encoder`` (refusing the two disagreeing)."""
    if args.method and args.encoder and ENCODERS[args.encoder] != args.method:
        raise ConfigError(f"tabconv convert: --encoder {args.encoder} is --method {ENCODERS[args.encoder]}, "
                          f"not {args.method}: give one of them")
    return args.method or ENCODERS[args.encoder or "pq"]


def effective(args):
    """The settings of a run, defaults filled in: ``{option name: value}`` in command-line order.

    Raises ConfigError for an option the method does not take."""
    method = method_of(args)
    defaults = METHOD_DEFAULTS[method]
    for name in sorted({k for d in METHOD_DEFAULTS.values() for k in d} - set(defaults)):
        if getattr(args, name) is not None:
            takers = ", ".join(m for m, d in METHOD_DEFAULTS.items() if name in d)
            raise ConfigError(f"tabconv convert: --{name.replace('_', '-')} applies to --method {takers}, "
                              f"not {method}")
    out = {"method": method}
    for name, default in defaults.items():
        given = getattr(args, name)
        out[name] = default if given is None else given
    out.update(calibrate=args.calibrate, max_rows=args.max_rows)
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
    if args.plan is not None:
        return run_plan(args)
    opts = effective(args)
    own = {k: (parse_setting(v, PER_LAYER[k]) if k in PER_LAYER else None if v == "none" else v)
           for k, v in opts.items() if k in METHOD_DEFAULTS[opts["method"]]}
    check_output(args.output, overwrite=args.force, inputs=[args.model])
    net = load(args.model)
    xc, source = calibration_images(args, net)
    where = f"--data {shlex.quote(args.data)}" if args.data else f"--dataset {source.split('/')[0]}"
    line = f"tabconv convert {shlex.quote(args.model)} -o {shlex.quote(args.output)} {command_line(opts)} {where}"
    print(f"settings: {line}", file=sys.stderr if args.json else sys.stdout, flush=True)
    res = convert(net, xc, method=opts["method"], switches=args.switches,
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
    lines = reduction_lines(red)
    if opts["method"] == "int8":          # the paper convention counts no int8 MACs: say what they are
        lines[0] = int8_line(count_ops(res.network).total, count_ops(res.exact).total)
    if opts["method"] in ("binary", "ternary"):   # nor popcounts and bit operations
        lines[0] = binary_line(count_ops(res.network).total, count_ops(res.exact).total)
    print("\n".join(lines))
    print(f"calibrated on {len(xc)} {source} images in {res.seconds:.1f} s; wrote {args.output}")


def calibration_images(args, net):
    """``(images, source)``: the ``--calib`` seeded subset of the training images of ``--data`` /
    ``--dataset`` / the model's data set."""
    xc, _, source = command_images(net, "tabconv convert", "train", args.dataset, args.data,
                                   args.data_dir, labels=False)
    if len(xc) < 2:
        raise DataError(f"tabconv convert: {source} holds {len(xc)} image(s); calibration needs at least 2")
    if args.calib < len(xc):
        xc = xc[np.sort(np.random.default_rng(args.seed).choice(len(xc), args.calib, replace=False))]
    return xc, source


def run_plan(args):
    """``--plan PLAN.json``: each switch converted as the plan says (:mod:`tabconv_np.conversion.mixed`)."""
    from ..conversion import op_reduction
    from ..conversion.mixed import convert_plan, read_plan
    from ..fold import fold_batchnorm
    options = {"method", "encoder", "switches", "mask_rate"} | {k for d in METHOD_DEFAULTS.values() for k in d}
    given = sorted(n for n in options if getattr(args, n, None) is not None)
    if given:
        raise ConfigError(f"tabconv convert: --plan gives every switch its method and settings; drop "
                          f"--{given[0].replace('_', '-')}")
    plan = read_plan(args.plan)
    check_output(args.output, overwrite=args.force, inputs=[args.model, args.plan])
    net = load(args.model)
    xc, source = calibration_images(args, net)
    print(f"plan: {args.plan}", file=sys.stderr if args.json else sys.stdout, flush=True)
    out, record = convert_plan(net, xc, plan, seed=args.seed, calibrate=args.calibrate, max_rows=args.max_rows,
                               refit_classifier=not args.no_refit)
    out.meta["calibration_dataset"] = source
    save(out, args.output, overwrite=args.force)
    red = op_reduction(out, fold_batchnorm(net))
    if args.json:
        print(json.dumps(dict(record, output=args.output, op_reduction=red, calibration_data=source, plan=args.plan)))
        return
    for g in record["groups"]:
        print(f"{g['method']} {json.dumps(g['settings'])}: {', '.join(g['switches'])} ({g['seconds']:.1f} s)")
    print("\n".join(reduction_lines(red)))
    print(f"calibrated on {len(xc)} {source} images in {record['seconds']:.1f} s; wrote {args.output}")
