"""Calibration data plumbing: chunked forward passes, a layer's input rows, augmentation.

Everything here is method-independent: a conversion method receives a
:class:`LayerData` for the layer it converts and asks it for what it needs
(rows of the layer's input, the exact output it should reproduce).
"""
from dataclasses import dataclass

import numpy as np

from ..geometry import from_rows, to_rows
from ..layers import Linear

#: Images per forward chunk during calibration (bounds the im2col buffers).
BATCH = 250


def apply(module, x, layout, batch=BATCH):
    """``module.forward`` over ``x`` in chunks of ``batch`` images."""
    if len(x) <= batch:
        return module.forward(x, layout)
    return np.concatenate([module.forward(x[i:i + batch], layout) for i in range(0, len(x), batch)])


def add_all(values):
    """Element-wise sum of a graph sum node's inputs, in the order ``Graph.forward`` adds them."""
    y = values[0] + values[1]
    for v in values[2:]:
        y += v
    return y


def layer_rows(layer, x, layout, idx=None, batch=BATCH):
    """The input rows of ``layer`` (im2col for a conv) on ``x``; only those at ``idx`` (sorted) if given."""
    if isinstance(layer, Linear):
        return np.ascontiguousarray(x[idx] if idx is not None else x, np.float32)
    g = layer.geometry
    P = g.n_rows(x[:1], layout)
    out = []
    for i in range(0, len(x), batch):
        r, _ = g.lower(x[i:i + batch], layout)
        if idx is None:
            out.append(r)
        else:
            lo, hi = np.searchsorted(idx, [i * P, min(len(x), i + batch) * P])
            out.append(r[idx[lo:hi] - i * P])
    return np.ascontiguousarray(np.concatenate(out))


def n_rows(layer, x, layout):
    """Rows ``layer`` sees on batch ``x``: ``N*Ho*Wo`` for a conv, ``N`` for a linear layer."""
    return len(x) if isinstance(layer, Linear) else layer.geometry.n_rows(x, layout)


def rows_to_output(rows, like, layout):
    """Rows ``(N*Ho*Wo, M)`` shaped like the layer output ``like`` (a 2-d output: the rows)."""
    if like.ndim == 2:
        return rows
    N, Ho, Wo = (like.shape[0], like.shape[2], like.shape[3]) if layout == "NCHW" else like.shape[:3]
    return from_rows(rows, N, Ho, Wo, layout)


@dataclass
class LayerData:
    """What a method sees of one layer during the calibration walk.

    Attributes
    ----------
    path : str
        The layer's dotted path.
    layer : Module
        The exact (BN-folded) layer to replace; for the classifier being
        refit, the refit Linear.
    xa, xe : array
        The layer's input in the converted network so far and in the exact network.
    ye : array
        The exact network's output at this layer.
    layout : str
    calibrate : {"approx", "exact"}
        Which input the method should fit on (:attr:`x`).
    relu : bool
        A ReLU follows the layer (after ``shortcut`` is added, when given).
    shortcut : (array, array) or None
        The shortcut this layer's output is added to, in the converted and
        the exact network (the last layer of a residual branch).
    max_rows : int
        Cap on the rows used for fitting.
    notes : list of str
        Append what the user should know.
    """

    path: str
    layer: object
    xa: np.ndarray
    xe: np.ndarray
    ye: np.ndarray
    layout: str
    calibrate: str
    relu: bool
    shortcut: object
    max_rows: int
    notes: list

    @property
    def x(self):
        """The input to fit on: ``xa`` (calibrate="approx") or ``xe``."""
        return self.xa if self.calibrate == "approx" else self.xe

    def n_rows(self):
        return n_rows(self.layer, self.xa, self.layout)

    def sample_rows(self, rng):
        """``(rows, idx)``: the input rows to fit on, a seeded subsample of at most ``max_rows``
        (``idx`` None when all are used)."""
        n = self.n_rows()
        idx = None
        if n > self.max_rows:
            idx = np.sort(rng.choice(n, self.max_rows, replace=False))
        return layer_rows(self.layer, self.x, self.layout, idx), idx

    def target_rows(self, exact_target=True):
        """``(target rows, shift rows or None)`` that the layer's output should match.

        ``exact_target``: the exact network's output here; when the output is
        added to a shortcut, ``ye + se - sa`` (so that ``out + sa`` matches
        ``ye + se``), with the converted shortcut ``sa`` as the shift.
        Otherwise the exact layer applied to the converted input.
        """
        shift = None
        if exact_target:
            target = self.ye
            if self.shortcut is not None:
                target = self.ye + self.shortcut[1] - self.shortcut[0]
                shift = to_rows(self.shortcut[0], self.layout)
        else:
            target = apply(self.layer, self.xa, self.layout)
        return to_rows(target, self.layout), shift

    def refine_rows(self, bias, rng, exact_target=True):
        """``(sel, targets, shift)`` for refitting tables: :meth:`target_rows` minus ``bias``
        (which the shift then includes), on a seeded subsample of at most ``REFINE_ROWS`` rows
        (``sel`` indexes the layer's codes)."""
        Y, shift = self.target_rows(exact_target)
        if bias is not None:
            Y = Y - bias
            shift = bias if shift is None else shift + bias
        sel = slice(None)
        if len(Y) > REFINE_ROWS:
            sel = np.sort(rng.choice(len(Y), REFINE_ROWS, replace=False))
            shift = shift[sel] if shift is not None and np.ndim(shift) == 2 else shift
        return sel, Y[sel], shift


#: Calibration rows a table refinement fits on at most (seeded subsample).
REFINE_ROWS = 200_000


def augment_images(images, flip=True):
    """Calibration images plus their horizontal mirror images (``flip``), as one array.

    Only for data whose training used flips (Fashion-MNIST here); the
    mirrored copies double the calibration rows every layer sees.
    """
    images = np.asarray(images)
    if not flip:
        return images
    return np.concatenate([images, images[..., ::-1]])
