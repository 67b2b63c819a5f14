"""``tabconv ops``: operations per layer of a network file or a bundled architecture."""
from ..errors import ConfigError
from ..layers import Conv2d
from ..io import load
from ..models import ARCHS, build, parse_input
from ..ops import count_ops
from .options import count


def add_parser(sub):
    o = sub.add_parser("ops", help="count operations per layer",
                       description="Operations (MACs, adds, lookups, comparisons, ...), parameters and "
                       "storage per layer of a network file or a bundled architecture, for one image.")
    o.add_argument("model", nargs="?", help="a tabconv_np HDF5 file (or give --arch)")
    o.add_argument("--arch", choices=ARCHS, help="a bundled architecture instead of a file")
    o.add_argument("--input", help="C x H x W of one image, e.g. 1x28x28 (default: the network's; "
                   "for --arch: 3x32x32)")
    o.add_argument("--classes", type=count(1), default=10, metavar="N",
                   help="classes of a bundled architecture (--arch only; default: 10)")
    o.add_argument("--method", choices=("im2col", "winograd", "winograd4", "strassen"),
                   help="count each convolution as this method computes it, where the method applies "
                   "(Winograd: 3x3, stride 1, groups 1; Strassen: every conv); multiplications and additions are "
                   "then counted apart (the 'multiplies' convention in the totals)")
    o.add_argument("--json", action="store_true", help="print the counts as JSON instead of a table")
    o.set_defaults(func=run)
    return o


def run(args):
    if (args.model is None) == (args.arch is None):
        raise ConfigError("tabconv ops: give either a MODEL.h5 file or --arch NAME")
    shape = parse_input(args.input) if args.input else None
    if args.model:
        net = load(args.model)
    else:
        c, size = (shape[-3], shape[-1]) if shape else (3, 32)
        net = build(args.arch, in_channels=c, num_classes=args.classes, input_size=size)
    if args.method:
        for _, m in net.body.modules():
            if isinstance(m, Conv2d):
                m.method = args.method         # Conv2d.cost counts it where it applies
    counts = count_ops(net, shape)
    print(counts.to_json(indent=1) if args.json else counts.table())
