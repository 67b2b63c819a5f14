"""``tabconv convert``: a network file to a table network file (TabConv PQ tables or hash trees),
or to an int8 network (``--method int8``).

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
from ..report import command_line, int8_line, reduction_lines
from ..userdata import command_images
from .options import add_data_options, count

#: The defaults of ``--encoder pq`` / ``tree`` that differ: the conversion methods' own defaults
#: (TabConvSettings, MaddnessSettings; not imported here, which would load Numba for every
#: command: tests/test_cli.py checks that they agree).
ENCODER_DEFAULTS = {"pq": {"codebooks": "8", "prototypes": "256", "iters": 16, "refine": "none"},
                    "tree": {"codebooks": "auto", "refine": "exact"}}
#: The defaults of ``--method int8`` (Int8Settings; tests/test_cli.py checks that they agree).
INT8_DEFAULTS = {"bits": "8", "activations": "asymmetric", "range_rule": "minmax", "percentile": "99.99",
                 "min_images": 32}
#: Options of table lookups only, and of ``--method int8`` only.
TABLE_ONLY, INT8_ONLY = ("codebooks", "prototypes", "iters", "refine"), tuple(INT8_DEFAULTS)


def add_parser(sub):
    c = sub.add_parser("convert", help="convert a network to table lookups (TabConv or hash trees) or int8",
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
                   "pq, the authors' plain tables; exact for tree)")
    c.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    c.add_argument("--method", choices=["int8"],
                   help="a compression method instead of table lookups: int8 (post-training quantisation: "
                   "int8 weights per output channel, 8-bit inputs per tensor calibrated on the training "
                   "images); default: table lookups, as --encoder says")
    c.add_argument("--bits", help="int8 only: bits per layer, an int or PATTERN=VALUE items; 8 is the only "
                   "width supported; default 8")
    c.add_argument("--activations", help="int8 only: asymmetric (uint8 with a zero point) or symmetric "
                   "(int8 in [-127, 127]), one value or PATTERN=VALUE items; default asymmetric")
    c.add_argument("--range-rule", help="int8 only: each layer's input range from the calibration "
                   "activations' minmax or percentile (see --percentile), one value or PATTERN=VALUE "
                   "items; default minmax")
    c.add_argument("--percentile", help="int8 only: P of --range-rule percentile (range from the 100-P to "
                   "the P percentile), in (50, 100], one value or PATTERN=VALUE items; default 99.99")
    c.add_argument("--min-images", type=count(2), metavar="N",
                   help="int8 only: refuse fewer calibration images than N (default: 32)")
    c.set_defaults(func=run)
    return c


def effective(args):
    """The settings of a run, defaults filled in: ``{option name: value}`` in command-line order."""
    d = ENCODER_DEFAULTS[args.encoder]
    out = {"encoder": args.encoder, "codebooks": args.codebooks or d["codebooks"]}
    if args.encoder == "pq":
        out.update(prototypes=args.prototypes or d["prototypes"],
                   iters=d["iters"] if args.iters is None else args.iters)
    out.update(refine=args.refine or d["refine"], calibrate=args.calibrate, max_rows=args.max_rows)
    return _common(args, out)


def effective_int8(args):
    """:func:`effective` of ``--method int8``."""
    out = {"method": "int8"}
    for k, v in INT8_DEFAULTS.items():
        out[k] = v if getattr(args, k) is None else getattr(args, k)
    out["calibrate"] = args.calibrate
    return _common(args, out)


def _common(args, out):
    """``out`` with the options every method shares."""
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
    method, opts, own = _method_settings(args)
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
    lines = reduction_lines(red)
    if method == "int8":                  # the paper convention counts no int8 MACs: say what they are
        lines[0] = int8_line(count_ops(res.network).total, count_ops(res.exact).total)
    print("\n".join(lines))
    print(f"calibrated on {len(xc)} {source} images in {res.seconds:.1f} s; wrote {args.output}")


def _method_settings(args):
    """``(method name, effective options, the method's own settings)``; options of another method refused."""
    other = [k for k in (TABLE_ONLY if args.method == "int8" else INT8_ONLY) if getattr(args, k) is not None]
    if other:
        flag = "--" + other[0].replace("_", "-")
        raise ConfigError(f"tabconv convert: {flag} applies to "
                          f"{'table lookups (--encoder), not --method int8' if args.method else '--method int8'}")
    if args.method == "int8":
        opts = effective_int8(args)
        own = {"bits": parse_setting(opts["bits"], int), "activations": parse_setting(opts["activations"], str.lower),
               "range_rule": parse_setting(opts["range_rule"], str.lower),
               "percentile": parse_setting(opts["percentile"], float), "min_images": opts["min_images"]}
        return "int8", opts, own
    tree = args.encoder == "tree"
    if tree and (args.prototypes is not None or args.iters is not None):
        raise ConfigError("tabconv convert: --prototypes and --iters apply to --encoder pq only "
                          "(a hash tree has 16 leaves)")
    opts = effective(args)
    own = {"codebooks": parse_setting(opts["codebooks"], str),
           "refine": None if opts["refine"] == "none" else opts["refine"]}
    if not tree:
        own.update(prototypes=parse_setting(opts["prototypes"], int), iters=opts["iters"])
    return "maddness" if tree else "tabconv", opts, own
