"""``tabconv demo``: convert the shipped ResNet-18 and compare it with the exact one.

The work is :func:`tabconv_np.demo.run_demo`; this module is its command line.
"""
import json

from ..errors import ConfigError

from ..demo import DEFAULT_MODEL, DEMO_SETTINGS, format_reports, parse_setting, run_demos


def add_parser(sub):
    d = sub.add_parser("demo", help="convert the shipped ResNet-18 and compare it with the exact one")
    d.add_argument("--model", help=f"model file (default {DEFAULT_MODEL} in the repository)")
    d.add_argument("--calib", type=int, default=1000, help="calibration images (shipped training sample)")
    d.add_argument("--test", type=int, default=1000, help="test images (shipped test sample)")
    d.add_argument("--method", default="both", choices=["both", "maddness", "tabconv"],
                   help="maddness: hash-tree encoding and 8-bit tables (the fast setting); tabconv: the "
                   "paper's PQ tables; both (default): the fast one, reported beside the paper-faithful one")
    d.add_argument("--codebooks", help=f"tabconv: default {DEMO_SETTINGS['codebooks']}; maddness: default "
                   "auto (one codebook per input channel's window)")
    d.add_argument("--prototypes", help=f"tabconv only: default {DEMO_SETTINGS['prototypes']}")
    d.add_argument("--mask-rate", type=float)
    d.add_argument("--switches", help="comma list of 0/1, one per switch")
    d.add_argument("--calibrate", default="approx", choices=["approx", "exact"])
    d.add_argument("--refine", default="exact", choices=["exact", "local", "none"],
                   help="table refinement (none: the authors' plain PQ tables, or the leaves' means)")
    d.add_argument("--save", metavar="TABLE.h5", help="write the (first method's) converted network here")
    d.add_argument("--force", action="store_true", help="replace an existing --save file")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-latency", action="store_true", help="skip the batch-1 latency measurement")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=run)
    return d


def run(args):
    methods = ("maddness", "tabconv") if args.method == "both" else (args.method,)
    if args.prototypes is not None and "tabconv" not in methods:
        raise ConfigError("tabconv demo: --prototypes applies to --method tabconv only")
    r = run_demos(methods, save=args.save, overwrite=args.force, model=args.model, calib=args.calib, test=args.test,
                 codebooks=parse_setting(args.codebooks, str),
                 prototypes=parse_setting(args.prototypes, int),
                 switches=args.switches, mask_rate=args.mask_rate, seed=args.seed,
                 progress=False if args.json else None, calibrate=args.calibrate,
                 latency=not args.no_latency,
                 refine=None if args.refine == "none" else args.refine)
    print(json.dumps(r) if args.json else format_reports(r))
