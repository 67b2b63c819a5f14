"""Where a command's images come from: the user's own files, or the data set the model records.

:func:`load_user_images` reads images a user brings (``tabconv eval --data``,
``tabconv convert --data``):

- an ``.npz`` archive with an image array (``images`` or ``x``, or its only
  array) and optional labels (``labels`` or ``y``);
- an ``.npy`` image array (no labels);
- an IDX image file (raw or gzip, as Fashion-MNIST ships): the labels are
  read from the file of the same name with ``images``/``idx3`` replaced by
  ``labels``/``idx1`` when it exists;
- a folder of PNG/JPEG files, one sub-folder per class (labels in sorted
  folder-name order), or the files directly in it (no labels); reading them
  needs Pillow (``pip install Pillow``), an optional extra.

Image arrays may be (N, C, H, W), (N, H, W, C) or, for one channel, (N, H, W);
uint8 0-255, another integer type with values in 0..255, or floats in the
network's input range (see :mod:`tabconv_np.network`).

:func:`model_dataset` picks the data set a model file records
(``net.meta["dataset"]``), and refuses to guess when it records none.
"""
import os
import zipfile
import zlib

import numpy as np

from .data import DATASETS, load_dataset, read_idx
from .errors import DataError, ShapeError
from .validate import regular_file

#: File name endings read as images from a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

#: The data set used for a recorded data set name: Fashion-MNIST models use the
#: shipped sample of Fashion-MNIST (1,000 training and 1,000 test images), so
#: that a fresh checkout works; ``--dataset fashion-mnist`` takes the full set.
RECORDED = {"fashion-mnist": "sample"}


def model_dataset(net, what):
    """The data set name to use for ``net`` when the user named none.

    Parameters
    ----------
    net : Network
    what : str
        The command, for the message (``"tabconv eval"``).

    Returns
    -------
    str
        One of :data:`tabconv_np.data.DATASETS`.

    Raises
    ------
    DataError
        The model records no data set, or one this package cannot load.
    """
    ds = net.meta.get("dataset")
    if ds in DATASETS:
        return RECORDED.get(ds, ds)
    said = f"records the data set {ds!r}, which tabconv_np cannot load" if ds else "records no data set"
    raise DataError(f"{what}: the model {said}; choose one with --dataset "
                    f"{{{','.join(DATASETS)}}} or give your own images with --data PATH "
                    f"(.npz/.npy array, IDX file, or a folder of PNG/JPEG per class)")


def _labels_beside(path):
    """The IDX labels file that goes with IDX images file ``path``, or None."""
    head, name = os.path.split(path)
    other = name.replace("images", "labels").replace("idx3", "idx1")
    p = os.path.join(head, other)
    return p if other != name and os.path.exists(p) else None


def _from_npz(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            key = next((k for k in ("images", "x") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise DataError(f"{path}: no image array: name it 'images' (and the labels 'labels'); "
                                f"the archive holds {keys}")
            lkey = next((k for k in ("labels", "y") if k in keys), None)
            return z[key], (z[lkey] if lkey else None)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        # object arrays need pickles, which are never loaded; a damaged archive is not a zip
        raise DataError(f"{path}: unreadable .npz ({e}); store plain numeric arrays") from None


def _from_folder(path, channels):
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{path}: reading PNG/JPEG files needs Pillow (pip install Pillow); "
                        f"or save the images as an .npz array") from None
    subdirs = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    groups = [(i, os.path.join(path, d)) for i, d in enumerate(subdirs)] or [(None, path)]
    images, labels = [], []
    for label, folder in groups:
        for name in sorted(os.listdir(folder)):
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            f = os.path.join(folder, name)
            try:
                with Image.open(f) as im:
                    images.append(np.asarray(im.convert("L" if channels == 1 else "RGB")))
            except OSError as e:
                raise DataError(f"{f}: not a readable image ({e})") from None
            labels.append(label)
    if not images:
        raise DataError(f"{path}: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files in it or in "
                        f"its sub-folders (one per class)")
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise DataError(f"{path}: images of different sizes {sorted(sizes)}; resize them to the "
                        f"network's input size first")
    return np.stack(images), (np.asarray(labels, np.int64) if subdirs else None)


def _as_batch(x, input_shape, path):
    """``x`` as (N, C, H, W) uint8 or float images of ``input_shape`` (C, H, W)."""
    c, h, w = input_shape
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    elif x.ndim == 4 and tuple(x.shape[1:]) != tuple(input_shape) and x.shape[1:] == (h, w, c):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ShapeError(f"{path}: images of shape {x.shape}, but the network takes (N, {c}, {h}, {w}) "
                         f"(or (N, {h}, {w}, {c}){f', (N, {h}, {w})' if c == 1 else ''})")
    if x.dtype.kind in "iu" and x.dtype != np.uint8:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{path}: integer pixels outside 0..255 ({x.min()}..{x.max()})")
        x = x.astype(np.uint8)
    elif x.dtype.kind not in "uf":
        raise DataError(f"{path}: images of dtype {x.dtype}; store uint8 0-255 or floats in [0, 1]")
    return np.ascontiguousarray(x)


def load_user_images(path, input_shape, limit=None):
    """The images (and labels, when the files have them) at ``path``.

    Parameters
    ----------
    path : str
        An ``.npz`` or ``.npy`` file, an IDX image file, or a folder of PNG/JPEG
        files (see the module docstring).
    input_shape : tuple of int
        ``(C, H, W)`` the network takes; the images are checked against it.
    limit : int, optional
        Keep the first ``limit`` images.

    Returns
    -------
    images : array (N, C, H, W)
        uint8, or floats as stored.
    labels : int64 array (N,) or None

    Raises
    ------
    DataError
        Missing or unreadable files, labels that do not fit, Pillow missing for a folder.
    ShapeError
        Images of another size or channel count than ``input_shape``.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder (--data takes an .npz/.npy array, an IDX file "
                        f"or a folder of PNG/JPEG per class)")
    if os.path.isdir(path):
        x, y = _from_folder(path, input_shape[0])
    elif path.endswith(".npz"):
        x, y = _from_npz(regular_file(path, DataError))
    elif path.endswith(".npy"):
        try:
            x, y = np.load(regular_file(path, DataError), allow_pickle=False), None
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: unreadable .npy ({e}); store a plain numeric array") from None
    else:
        x = read_idx(path)
        lp = _labels_beside(path)
        y = read_idx(lp) if lp else None
    x = _as_batch(np.asarray(x), input_shape, path)
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu" or (y.size and y.min() < 0):
            raise DataError(f"{path}: labels must be {len(x)} non-negative ints (one per image), "
                            f"got {y.dtype} {y.shape}")
        y = y.astype(np.int64)
    if limit is not None:
        x, y = x[:limit], (y[:limit] if y is not None else None)
    return x, y


def command_images(net, what, split, dataset=None, data=None, data_dir=None, limit=None, labels=True):
    """Images for a command: ``--data PATH``, else ``--dataset``, else the model's recorded data set.

    Parameters
    ----------
    net : Network
    what : str
        The command, for messages.
    split : {"train", "test"}
        The split of a named data set.
    dataset, data, data_dir, limit
        The command's options (``data`` and ``dataset`` exclude each other).
    labels : bool
        Whether labels are required.

    Returns
    -------
    images : array (N, C, H, W)
    labels : int64 array (N,) or None
    source : str
        What was read, for the report (``"sample/test"``, ``"my.npz"``).

    Raises
    ------
    DataError
        The model records no data set and none is named; files missing or
        malformed; labels required but absent.
    ShapeError
        Images that do not fit the network.
    """
    if data is not None:
        x, y = load_user_images(data, net.input_shape, limit)
        if labels and y is None:
            raise DataError(f"{what}: {data} has no labels; store them beside the images ('labels' in "
                            f"the .npz, the IDX labels file, or one sub-folder per class)")
        return x, y, data
    name = dataset or model_dataset(net, what)
    x, y = load_dataset(name, split, data_dir=data_dir, limit=limit)
    return x, y, f"{name}/{split}"
