"""Accuracy and throughput of a network on a labelled image set."""
import time

import numpy as np

from .errors import DataError, ShapeError
from .progress import Progress

__all__ = ["evaluate", "layer_inputs"]


def layer_inputs(net, images, select):
    """What the layers ``select`` picks receive when ``net`` predicts ``images``.

    Parameters
    ----------
    net : Network
    images : ndarray (N, C, H, W)
        As for :meth:`Network.predict` (uint8 or floats in the network's range).
    select : callable(module) -> bool
        Which leaf layers to record.

    Returns
    -------
    list of (name, module, ndarray)
        In execution order, each input as the layer received it (NCHW, one
        array over all images, since ``predict`` runs them as one batch here).
    """
    names = {id(m): name for name, m in net.body.modules()}
    seen, patched = [], [m for _, m in net.body.modules() if select(m)]
    for m in patched:
        def record(x, layout, m=m, forward=m.forward):
            seen.append((names[id(m)], m, np.array(x)))
            return forward(x, layout)
        m.forward = record
    try:
        net.predict(images, batch=max(1, len(images)))
    finally:
        for m in patched:
            del m.forward
    return seen


def evaluate(net, images, labels, batch=64, progress=None, output=0):
    """Top-1 accuracy of ``net`` on ``images`` / ``labels``.

    Parameters
    ----------
    net : Network
        Anything with ``predict(images) -> logits`` (tabconv_np.Network, including
        converted table networks).
    images : ndarray (N, C, H, W)
        At least one image: uint8 0-255, or floats in the network's input range
        (default [0, 1]); ``net.predict`` applies the network's preprocess.
    labels : ndarray (N,)
        Integer class labels.
    batch : int
        Images per forward pass.
    progress : None, bool
        Progress on stderr (:class:`~tabconv_np.progress.Progress`): None, a bar on
        a terminal and heartbeat lines otherwise; False, silent.
    output : int
        Which output of a network with several holds the logits (default the first).

    Returns
    -------
    dict
        ``accuracy`` (fraction), ``correct``, ``images``, ``seconds`` (wall time of
        the forward passes), ``images_per_s``.

    Raises
    ------
    ShapeError
        Images not (N, C, H, W), labels of another length, float images outside
        the network's input range.
    DataError
        No images.
    """
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim != 4:
        raise ShapeError(f"evaluate: images must be (N, C, H, W), got shape {images.shape}")
    if len(images) != len(labels):
        raise ShapeError(f"evaluate: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DataError("evaluate: no images to evaluate (an accuracy of 0 images is undefined); "
                        "give at least one image")
    if not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ShapeError(f"evaluate: batch must be a positive int, got {batch!r}")
    n = len(images)
    correct = 0
    seconds = 0.0
    with Progress(n, f"evaluating ({n} images)", enabled=progress) as bar:
        for i in range(0, n, batch):
            xb = images[i:i + batch]
            t0 = time.perf_counter()
            logits = np.asarray(net.predict(xb, output=output) if output else net.predict(xb))
            seconds += time.perf_counter() - t0
            correct += int((logits.argmax(axis=1) == labels[i:i + batch]).sum())
            bar.update(len(xb))
    return {"accuracy": correct / n, "correct": correct, "images": n,
            "seconds": seconds, "images_per_s": n / seconds if seconds > 0 else float("nan")}
