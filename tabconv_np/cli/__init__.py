"""The ``tabconv`` command line.

    tabconv ops --arch resnet18-paper --input 1x28x28 [--json]
    tabconv ops MODEL.h5 [--input 1x28x28] [--json]
    tabconv eval MODEL.h5 [--dataset sample] [--split test] [--limit N] [--batch B] [--json]
    tabconv warmup
    tabconv import SOURCE -o MODEL.h5 [--arch NAME | --spec SPEC.json] [--input 1x28x28] [--classes N]
    tabconv convert MODEL.h5 -o TABLE.h5 --codebooks C --prototypes K [--mask-rate M] [--switches 1,0,...]
    tabconv demo [--json]
"""
import argparse
import sys

from ..errors import TabConvError
from . import convert, demo, import_, ops, warmup
from . import eval as eval_

#: One module per subcommand, each with ``add_parser(sub)`` and ``run(args)``;
#: in the order of ``tabconv -h``.
COMMANDS = (ops, eval_, warmup, import_, convert, demo)


def build_parser():
    p = argparse.ArgumentParser(prog="tabconv", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except TabConvError as e:
        print(f"tabconv {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
