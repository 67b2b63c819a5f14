"""``tabconv eval``: accuracy and speed of a network file on a data set, or on the user's images."""
import json

from ..evaluate import evaluate
from ..io import load
from ..userdata import command_images
from .options import add_data_options, count


def add_parser(sub):
    e = sub.add_parser("eval", help="accuracy and speed of a network on a data set",
                       description="Top-1 accuracy and images per second of a network file on labelled "
                       "images: the data set the model records, --dataset NAME, or your own --data PATH.")
    e.add_argument("model", help="a tabconv_np HDF5 file (exact or table network)")
    add_data_options(e, "the split --split names", "evaluation")
    e.add_argument("--split", default="test", choices=["test", "train"],
                   help="split of the named data set (default: test)")
    e.add_argument("--limit", type=count(1), metavar="N", help="evaluate the first N images only (default: all)")
    e.add_argument("--batch", type=count(1), default=64, metavar="B", help="images per forward pass (default: 64)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of a line of text")
    e.add_argument("--output", type=count(0), default=0, metavar="K",
                   help="which output of a network with several holds the class scores (default: 0, the first)")
    e.set_defaults(func=run)
    return e


def run(args):
    net = load(args.model)
    images, labels, source = command_images(net, "tabconv eval", args.split, args.dataset, args.data,
                                            args.data_dir, args.limit)
    # progress on stderr (a bar, or heartbeat lines off a terminal): stdout stays the result
    res = evaluate(net, images, labels, batch=args.batch, output=args.output)
    res.update(model=args.model, data=source)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{args.model}: accuracy {100 * res['accuracy']:.2f}% on {res['images']} {source} images, "
              f"{res['images_per_s']:.1f} images/s")
