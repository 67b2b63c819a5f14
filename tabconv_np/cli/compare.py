"""``tabconv compare``: every conversion method side by side on one network; a per-layer plan under a budget.

What is measured and how: :mod:`tabconv_np.compare`; the search:
:mod:`tabconv_np.budget`; the report folder: :mod:`tabconv_np.compare_report`.
"""
import json
import os
import shlex
import sys

from ..io import load
from ..outputs import check_output
from .options import add_data_options, count

#: What ``tabconv compare -h`` says.
DESCRIPTION = (
    "Convert a network with every method at a few settings each, measure each result against the exact "
    "network (accuracy, retention, operations in the method's own units and the full convention, storage, "
    "latency at batch 1 and 32, conversion time), and with --budget choose a method per switch under the "
    "budget. Settings are chosen on a validation split of the training images; test images only report. "
    "Finished results are kept in --results, so an interrupted run resumes. Takes minutes (ResNet-18 at "
    "28x28, every method: about 7-15 min on one core).")
#: The options with defaults (a report's command line leaves them out).
DEFAULTS = {"methods": "all", "calib": 200, "val": 300, "repeats": 5, "seed": 0}


def add_parser(sub):
    c = sub.add_parser("compare", help="every conversion method side by side; a per-layer plan under a budget",
                       description=DESCRIPTION)
    c.add_argument("model", help="a tabconv_np HDF5 file")
    c.add_argument("--methods", default=DEFAULTS["methods"],
                   help="'all' or a comma list (tabconv, maddness, lowrank, int8, lcnn, rsdtr, prune, ...); "
                   "default all")
    c.add_argument("--budget", metavar="KIND=VALUE",
                   help="choose a method and setting per switch under a budget: ops=40%% (full-convention "
                   "operations, or an amount: ops=12M), latency=80%% (batch 1, or latency=2.5ms), "
                   "storage=25%% (or storage=4MiB); percentages are of the exact network")
    c.add_argument("--calib", type=count(2), default=DEFAULTS["calib"], metavar="N",
                   help="calibration images: a seeded subset of N training images (default: 200)")
    c.add_argument("--val", type=count(1), default=DEFAULTS["val"], metavar="N",
                   help="validation images (stratified, from the training images, apart from the "
                   "calibration ones): they choose settings (default: 300)")
    c.add_argument("--test", type=count(1), metavar="N", help="report on the first N test images (default: all)")
    add_data_options(c, "training split for calibration and validation, test split for the figures",
                     "calibration, validation and test")
    c.add_argument("--repeats", type=count(1), default=DEFAULTS["repeats"], metavar="R",
                   help="interleaved timing samples per batch size (median; default: 5)")
    c.add_argument("--threads", type=count(1), metavar="N",
                   help="Numba and BLAS threads for the whole run (default: tabconv_np's)")
    c.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of every random choice (default: 0)")
    c.add_argument("--results", metavar="FILE.jsonl",
                   help="finished results, one JSON line each; a run given the same file skips them "
                   "(default: DIR/results.jsonl with --report, else compare-<model>.jsonl here)")
    c.add_argument("--fresh", action="store_true", help="start --results over instead of resuming")
    c.add_argument("--plan", metavar="PLAN.json", dest="plan_out",
                   help="where --budget writes its plan, for tabconv convert --plan (default: DIR/plan.json "
                   "with --report, else plan.json here)")
    c.add_argument("--report", metavar="DIR", help="write DIR/report.md, DIR/results.json and, with "
                   "matplotlib installed, Pareto plots and a per-layer chart")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    c.set_defaults(func=run)
    return c


def run(args):
    # imported here, not at the top: compare loads Numba and the conversion methods
    from ..budget import parse_budget
    from ..compare import (BATCHES, Context, Results, budget_search, file_digest, method_list,
                           run_grid, split_images)
    from ..compare_report import NO_PLOTS, plan_lines, pyplot, table, write_report, write_text
    from ..conversion import METHODS as REGISTERED
    from ..threads import get_num_threads, set_num_threads
    methods = method_list(args.methods, REGISTERED)
    budget = parse_budget(args.budget) if args.budget is not None else None
    stem = os.path.splitext(os.path.basename(args.model))[0]
    results = args.results or (os.path.join(args.report, "results.jsonl") if args.report else f"compare-{stem}.jsonl")
    plan_out = args.plan_out or (os.path.join(args.report, "plan.json") if args.report else "plan.json")
    outs = [results] + ([plan_out] if budget else [])
    if args.report:
        os.makedirs(args.report, exist_ok=True)
        outs += [os.path.join(args.report, n) for n in ("report.md", "results.json")]
    for path in outs:
        check_output(path, overwrite=True, inputs=[args.model])
    if args.threads:
        set_num_threads(args.threads)
    net = load(args.model)
    split = split_images(net, args.calib, args.val, args.seed, args.dataset, args.data, args.data_dir, args.test)
    context = dict(model=file_digest(args.model), seed=args.seed, repeats=args.repeats, batches=list(BATCHES),
                   threads=get_num_threads(), **split.sources)
    store = Results(results, context, fresh=args.fresh)
    log = sys.stderr
    print(f"tabconv compare: {len(methods)} method(s), results in {results}"
          + (f" ({len(store.rows)} finished before: skipped)" if store.rows else ""), file=log, flush=True)
    ctx = Context(net, split, repeats=args.repeats, seed=args.seed)
    rows, refused = run_grid(ctx, methods, store, stream=log)
    doc = {"context": context, "exact": ctx.row, "results": rows, "refused": refused, "search": None}
    if budget:
        found = budget_search(ctx, rows, budget)
        write_text(plan_out, json.dumps(found["plan"], indent=1) + "\n")
        doc["search"] = dict(found, plan_file=plan_out)
    if args.report:
        write_report(args.report, doc, command_of(args))
    if args.json:
        print(json.dumps(doc))
        return
    print("\n".join(table([ctx.row] + rows + ([doc["search"]["row"]] if budget else []))))
    for r in refused:
        print(f"refused: {r['label']}: {r['error']}")
    if budget:
        print("\n" + "\n".join(plan_lines(doc["search"], rows, ctx.row)))
        print(f"plan written to {plan_out}: apply it with tabconv convert {shlex.quote(args.model)} "
              f"-o OUT.h5 --plan {shlex.quote(plan_out)}")
    if args.report:
        print(f"report written to {os.path.join(args.report, 'report.md')}"
              + ("" if pyplot() else f" ({NO_PLOTS})"))


def command_of(args):
    """The command line of a run (its options that differ from the defaults), for the report."""
    out = ["tabconv compare", shlex.quote(args.model)]
    for name in ("methods", "budget", "calib", "val", "test", "dataset", "data", "data_dir", "repeats", "threads",
                 "seed", "report", "fresh"):
        v = getattr(args, name)
        if v is True:
            out.append(f"--{name}")
        elif v not in (None, False, DEFAULTS.get(name)):
            out.append(f"--{name.replace('_', '-')} {shlex.quote(str(v))}")
    return " ".join(out)
