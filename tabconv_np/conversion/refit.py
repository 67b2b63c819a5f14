"""The classifier refit: ridge regression of the exact logits on the converted network's features."""
import numpy as np

from ..layers import Linear


def ridge(features, targets, alpha):
    """Ridge regression with an unpenalised intercept: ``(weight (M, F), bias (M,), lambda)``.

    ``alpha`` is relative: the penalty is ``alpha * trace(Xc'Xc) / F`` on the
    centred features ``Xc``.
    """
    X = np.asarray(features, np.float64)
    Y = np.asarray(targets, np.float64)
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    return ridge_gram(Xc.T @ Xc, Xc.T @ Yc, mx, my, alpha)


def ridge_gram(G, XtY, mx, my, alpha):
    """:func:`ridge` from the centred Gram matrices ``G = Xc'Xc`` (F, F) and ``XtY = Xc'Yc``
    (F, M) and the means ``mx`` (F,), ``my`` (M,); ``G`` is overwritten."""
    lam = alpha * np.trace(G) / max(G.shape[0], 1)
    G[np.diag_indices_from(G)] += max(lam, 1e-12)
    W = np.linalg.solve(G, XtY)                # (F, M)
    b = my - mx @ W
    return W.T.astype(np.float32), b.astype(np.float32), float(lam)


def refit_linear(layer, features, targets, alpha):
    """A Linear (with bias) fitted by :func:`ridge`, and ``lambda``."""
    W, b, lam = ridge(features, targets, alpha)
    out = Linear(layer.in_features, layer.out_features, bias=True)
    out.params["weight"][...] = W
    out.params["bias"][...] = b
    return out, lam


def last_linear(switches, modules):
    """Path of the network's last weight layer if it is a Linear, else None."""
    last = switches[-1].leaves[-1] if switches and switches[-1].leaves else None
    return last if isinstance(modules.get(last), Linear) else None
