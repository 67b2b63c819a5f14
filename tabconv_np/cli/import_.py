"""``tabconv import``: PyTorch / ONNX / Keras weights to a tabconv_np HDF5 file (no framework needed)."""
from ..errors import ConfigError, WeightFileError
from ..importers.dispatch import import_model
from ..io import save
from ..outputs import check_output
from ..data import DATASETS
from ..models import ARCHS
from ..network import input_range
from .options import count

DESCRIPTION = ("Import a PyTorch state dict (torch.save, zip or legacy format), an ONNX model "
               "or a Keras model (.h5, .weights.h5, .keras) into a tabconv_np HDF5 file, "
               "without torch, onnxruntime or TensorFlow. The format is detected from the "
               "file's content. See docs/byo_model.md.")


def add_parser(sub):
    p = sub.add_parser("import", help="import PyTorch / ONNX / Keras weights (no framework needed)",
                       description=DESCRIPTION)
    p.add_argument("source", help="the file to import")
    p.add_argument("-o", "--output", required=True, help="the tabconv_np HDF5 file to write")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--arch", choices=ARCHS, help="a bundled architecture the state dict fits")
    g.add_argument("--spec", help="a JSON layer spec (docs/import_spec.md) for other models")
    p.add_argument("--input", help="C x H x W of one image, e.g. 1x28x28 (default: from the file)")
    p.add_argument("--classes", type=count(1), metavar="N", help="number of classes (checked against the weights)")
    p.add_argument("--mean", help="input normalisation mean per channel, e.g. 0.2860")
    p.add_argument("--std", help="input normalisation std per channel, e.g. 0.3530")
    p.add_argument("--range", metavar="LO,HI",
                   help="the range of the training images before --mean/--std (default 0,1: pixels "
                   "divided by 255; 0,255 for a model trained on raw pixels); uint8 0-255 is scaled to it")
    p.add_argument("--dataset", choices=DATASETS,
                   help="the data set the model was trained on, recorded in the file: tabconv eval and "
                   "convert then use it by default (without it they ask for --dataset or --data)")
    p.set_defaults(func=run)
    return p


def parse_range(text):
    """``[lo, hi]`` from ``"LO,HI"``; ConfigError unless two finite numbers with lo < hi."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"tabconv import: --range takes LO,HI (e.g. 0,255), got {text!r}") from None
    input_range({"range": [lo, hi]})
    return [lo, hi]


def run(args):
    """Import, save, print a summary and what to do next."""
    check_output(args.output, overwrite=args.force, inputs=[args.source])
    rng = parse_range(args.range) if args.range else None       # refused before the import, not after
    # warnings (a dropped softmax, ...) print as one line each (tabconv_np.cli.main)
    net = import_model(args.source, arch=args.arch, spec=args.spec, input_shape=args.input,
                       num_classes=args.classes, mean=args.mean, std=args.std)
    if rng:
        net.preprocess = dict(net.preprocess or {}, range=rng)
    if args.dataset:
        net.meta["dataset"] = args.dataset
    try:
        save(net, args.output, overwrite=args.force)
    except OSError as e:
        raise WeightFileError(f"{args.output}: cannot write: {e}") from None
    what = net.meta.get("arch") or type(net.body).__name__
    shape = "x".join(map(str, net.input_shape))
    outs = f"output {tuple(net.out_shape)}" if net.n_outputs == 1 else \
        f"outputs {', '.join(str(tuple(s)) for s in net.body.out_shapes(net.input_shape))}"
    print(f"imported {args.source} ({net.meta['source_format']}, {what}): input {shape}, "
          f"{outs}, {net.num_params():,} parameters")
    data = "" if args.dataset else " --dataset NAME (or --data PATH)"
    print(f"wrote {args.output}; next: tabconv ops {args.output}   or   tabconv eval {args.output}{data}")
