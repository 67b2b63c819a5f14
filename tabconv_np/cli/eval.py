"""``tabconv eval``: accuracy and speed of a network file on a data set."""
import json

from ..data import load_dataset
from ..evaluate import evaluate
from ..io import load


def add_parser(sub):
    e = sub.add_parser("eval", help="accuracy and speed of a network on a data set")
    e.add_argument("model")
    e.add_argument("--dataset", default="sample",
                   choices=["sample", "fashion-mnist", "mnist", "cifar10", "cifar100"])
    e.add_argument("--split", default="test", choices=["test", "train"])
    e.add_argument("--data-dir")
    e.add_argument("--limit", type=int)
    e.add_argument("--batch", type=int, default=64)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=run)
    return e


def run(args):
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
