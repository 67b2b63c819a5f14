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
import json
import sys
import time

from .errors import TabConvError


def _cmd_ops(args):
    from .models import build, parse_input
    from .ops import count_ops
    if (args.model is None) == (args.arch is None):
        raise TabConvError("give either a MODEL.h5 file or --arch NAME")
    shape = parse_input(args.input) if args.input else None
    if args.model:
        from .io import load
        net = load(args.model)
    else:
        c, size = (shape[-3], shape[-1]) if shape else (3, 32)
        net = build(args.arch, in_channels=c, num_classes=args.classes, input_size=size)
    counts = count_ops(net, shape)
    print(counts.to_json(indent=1) if args.json else counts.table())


def _cmd_eval(args):
    from .data import load_dataset
    from .evaluate import evaluate
    from .io import load
    net = load(args.model)
    images, labels = load_dataset(args.dataset, args.split, data_dir=args.data_dir, limit=args.limit)
    # a bar on a terminal only, never with --json
    res = evaluate(net, images, labels, batch=args.batch, progress=False if args.json else None)
    res.update(model=args.model, dataset=args.dataset, split=args.split)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.model}: accuracy {100 * res['accuracy']:.2f}% on {res['images']} "
              f"{args.dataset}/{args.split} images, {res['images_per_s']:.1f} images/s")


def _cmd_warmup(args):
    """Compile (and cache on disk) every kernel signature the bundled networks use."""
    import numpy as np

    from .models import build
    t0 = time.perf_counter()
    for arch in ("resnet18-paper", "nin", "lenet"):
        net = build(arch, 1, 10)
        x = np.zeros((2,) + net.input_shape, np.float32)
        for method in ("im2col", "mec", "direct", "auto"):
            for layout in ("NCHW", "NHWC"):
                net.set_method(method)
                net.layout = layout
                net(x)
        print(f"warmed {arch}", file=sys.stderr)
    from .tables import warmup as table_warmup
    table_warmup()
    print("warmed table kernels", file=sys.stderr)
    print(f"kernels compiled and cached in {time.perf_counter() - t0:.1f} s")


def build_parser():
    p = argparse.ArgumentParser(prog="tabconv", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    o = sub.add_parser("ops", help="count operations per layer")
    o.add_argument("model", nargs="?", help="a tabconv_np HDF5 file")
    o.add_argument("--arch", help="a bundled architecture instead of a file")
    o.add_argument("--input", help="C x H x W, e.g. 1x28x28 (default: the network's)")
    o.add_argument("--classes", type=int, default=10)
    o.add_argument("--json", action="store_true")
    o.set_defaults(func=_cmd_ops)

    e = sub.add_parser("eval", help="accuracy and speed of a network on a data set")
    e.add_argument("model")
    e.add_argument("--dataset", default="sample",
                   choices=["sample", "fashion-mnist", "mnist", "cifar10", "cifar100"])
    e.add_argument("--split", default="test", choices=["test", "train"])
    e.add_argument("--data-dir")
    e.add_argument("--limit", type=int)
    e.add_argument("--batch", type=int, default=64)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_cmd_eval)

    w = sub.add_parser("warmup", help="compile and cache every kernel (run once on a new machine)")
    w.set_defaults(func=_cmd_warmup)

    i = sub.add_parser("import", help="import PyTorch / ONNX / Keras weights (no framework needed)")
    from .importers.dispatch import add_arguments, cli_import
    add_arguments(i)
    i.set_defaults(func=cli_import)

    from .demo import add_cli_parsers as add_tabconv_parsers  # convert, demo
    add_tabconv_parsers(sub)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except TabConvError as e:
        print(f"tabconv {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
