"""``tabconv ops``: operations per layer of a network file or a bundled architecture."""
from ..errors import TabConvError
from ..io import load
from ..models import build, parse_input
from ..ops import count_ops


def add_parser(sub):
    o = sub.add_parser("ops", help="count operations per layer")
    o.add_argument("model", nargs="?", help="a tabconv_np HDF5 file")
    o.add_argument("--arch", help="a bundled architecture instead of a file")
    o.add_argument("--input", help="C x H x W, e.g. 1x28x28 (default: the network's)")
    o.add_argument("--classes", type=int, default=10)
    o.add_argument("--json", action="store_true")
    o.set_defaults(func=run)
    return o


def run(args):
    if (args.model is None) == (args.arch is None):
        raise TabConvError("give either a MODEL.h5 file or --arch NAME")
    shape = parse_input(args.input) if args.input else None
    if args.model:
        net = load(args.model)
    else:
        c, size = (shape[-3], shape[-1]) if shape else (3, 32)
        net = build(args.arch, in_channels=c, num_classes=args.classes, input_size=size)
    counts = count_ops(net, shape)
    print(counts.to_json(indent=1) if args.json else counts.table())
