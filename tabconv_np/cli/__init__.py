"""The ``tabconv`` command line.

    tabconv ops --arch resnet18-paper --input 1x28x28 [--json]
    tabconv ops MODEL.h5 [--input 1x28x28] [--json]
    tabconv eval MODEL.h5 [--dataset NAME | --data PATH] [--split test] [--limit N] [--batch B] [--json]
    tabconv warmup
    tabconv import SOURCE -o MODEL.h5 [--arch NAME | --spec SPEC.json] [--input 1x28x28] [--classes N]
    tabconv convert MODEL.h5 -o TABLE.h5 [--dataset NAME | --data PATH] [--codebooks C] [--prototypes K] ...
    tabconv demo [--json]
    tabconv compare MODEL.h5 [--methods all|LIST] [--budget ops=40%] [--report DIR] [--json]

Errors print one line, ``tabconv COMMAND: error: ...``, and exit with status 2;
warnings one line each on stderr; Ctrl-C stops any command with one line and
status 130.
"""
import argparse
import sys
import warnings

from ..errors import TabConvError
from . import compare, convert, demo, import_, ops, warmup
from . import eval as eval_

#: One module per subcommand, each with ``add_parser(sub)`` and ``run(args)``;
#: in the order of ``tabconv -h``.
COMMANDS = (ops, eval_, warmup, import_, convert, demo, compare)


def build_parser():
    p = argparse.ArgumentParser(prog="tabconv", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv=None):
    """Run ``tabconv`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"tabconv {args.command}: warning: {message}", file=sys.stderr, flush=True)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
            args.func(args)
    except TabConvError as e:
        print(f"tabconv {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ntabconv {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
