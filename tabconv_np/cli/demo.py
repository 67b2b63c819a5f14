"""``tabconv demo``: convert the shipped ResNet-18 and compare it with the exact one.

The work is :func:`tabconv_np.demo.run_demo`; this module is its command line.
"""
import json

from ..errors import ConfigError

from ..demo import DEFAULT_MODEL, DEMO_SETTINGS, format_reports, parse_setting, run_demos
from ..report import format_setting
from .options import count


def add_parser(sub):
    d = sub.add_parser("demo", help="convert the shipped ResNet-18 and compare it with the exact one")
    d.add_argument("--model", help=f"model file (default {DEFAULT_MODEL} in the repository)")
    d.add_argument("--calib", type=count(2), default=1000, metavar="N",
                   help="calibration images, from the shipped training sample (default: 1000, all of it)")
    d.add_argument("--test", type=count(1), default=1000, metavar="N",
                   help="test images, from the shipped test sample (default: 1000, all of it)")
    d.add_argument("--method", default="both", choices=["both", "maddness", "tabconv"],
                   help="maddness: hash-tree encoding and 8-bit tables (the fast setting); tabconv: the "
                   "paper's PQ tables; both (default): the fast one, reported beside the paper-faithful one")
    d.add_argument("--codebooks", help=f"tabconv: default {format_setting(DEMO_SETTINGS['codebooks'])}; "
                   "maddness: default auto (one codebook per input channel's window)")
    d.add_argument("--prototypes", help=f"tabconv only: default {format_setting(DEMO_SETTINGS['prototypes'])}")
    d.add_argument("--mask-rate", type=float, metavar="M",
                   help="priority masking rate in percent (default: none; the switches below are fixed)")
    d.add_argument("--switches", help="comma list of 0/1, one per switch (default: "
                   f"{','.join(map(str, DEMO_SETTINGS['switches']))}: stem and classifier exact)")
    d.add_argument("--max-rows", type=count(2), metavar="ROWS",
                   help=f"calibration rows per layer (default: {DEMO_SETTINGS['max_rows']})")
    d.add_argument("--iters", type=count(0), help=f"tabconv only: Lloyd iterations (default: {DEMO_SETTINGS['iters']})")
    d.add_argument("--calibrate", default="approx", choices=["approx", "exact"],
                   help="fit each layer on the table network's activations (approx, default) or the exact ones")
    d.add_argument("--refine", default="exact", choices=["exact", "local", "none"],
                   help="table refinement (none: the authors' plain PQ tables, or the leaves' means)")
    d.add_argument("--save", metavar="TABLE.h5", help="write the (first method's) converted network here")
    d.add_argument("--force", action="store_true", help="replace an existing --save file")
    d.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    d.add_argument("--no-latency", action="store_true", help="skip the batch-1 and batch-32 latency measurement")
    d.add_argument("--threads", type=count(1), metavar="N",
                   help="Numba and BLAS threads for the whole run (tabconv_np.set_num_threads; default: "
                   "as many as the process may use); on a busy machine 1 gives steadier timings")
    d.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    d.set_defaults(func=run)
    return d


def run(args):
    methods = ("maddness", "tabconv") if args.method == "both" else (args.method,)
    if args.threads:
        from ..threads import set_num_threads
        set_num_threads(args.threads)
    if (args.prototypes is not None or args.iters is not None) and "tabconv" not in methods:
        raise ConfigError("tabconv demo: --prototypes and --iters apply to --method tabconv only")
    r = run_demos(methods, save=args.save, overwrite=args.force, model=args.model, calib=args.calib, test=args.test,
                 codebooks=parse_setting(args.codebooks, str),
                 prototypes=parse_setting(args.prototypes, int),
                 switches=args.switches, mask_rate=args.mask_rate, seed=args.seed,
                 max_rows=args.max_rows, iters=args.iters,
                 calibrate=args.calibrate,
                 latency=not args.no_latency,
                 refine=None if args.refine == "none" else args.refine)
    print(json.dumps(r) if args.json else format_reports(r))
