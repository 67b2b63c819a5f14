"""Options several subcommands share: counts that must be positive, where the images come from."""
import argparse

from ..data import DATASETS


def count(minimum):
    """An argparse ``type`` for an int of at least ``minimum`` (``--calib -1`` is refused by argparse)."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {v}")
        return v
    parse.__name__ = f"int >= {minimum}"
    return parse


def add_data_options(p, split, role, aliases=()):
    """``--dataset`` / ``--data`` (exclusive) and ``--data-dir`` on parser ``p``.

    ``split``: the split of a named data set the command reads; ``role``: what
    the images are for, in the help text (``"evaluation"``); ``aliases``: more
    names of ``--dataset``.
    """
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dataset", *aliases, dest="dataset", choices=DATASETS, metavar="NAME",
                   help=f"a named data set for {role} ({split}): {', '.join(DATASETS)}; default: the data "
                   "set the model file records (Fashion-MNIST models: the shipped 1,000-image sample, "
                   "'sample'); a model that records none needs --dataset or --data")
    g.add_argument("--data", metavar="PATH",
                   help=f"your own {role} images: an .npz (arrays 'images' and 'labels') or .npy "
                   "array, an IDX images file (labels from the matching IDX labels file), or a "
                   "folder with one sub-folder of PNG/JPEG files per class (needs Pillow)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where the files of --dataset are (default: its usual place; CIFAR needs it)")
