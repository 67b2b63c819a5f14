"""The channel-pruning method: whole channels removed between two convolutions, the network shrinks.

He et al. (2017), "Channel pruning for accelerating very deep neural
networks": for a convolution B whose input is the output of a convolution A
(only per-channel layers between them: ReLU, batch norm, pooling), the input
channels of B are chosen by

    min over beta, W of || Y - sum_c beta_c X_c W_c^T ||_F^2   subject to  ||beta||_0 <= k

where ``X_c`` (rows, kh*kw) are the calibration rows of B's input window on
channel ``c``, ``W_c`` (C_out, kh*kw) B's weights on that channel (each scaled
to unit Frobenius norm, as in the paper) and ``Y`` the output B should
reproduce (the exact network's, net of B's bias and of a residual shortcut).
With ``W`` fixed this is a quadratic in ``beta`` over the Gram matrix
``G[c, d] = <X_c W_c^T, X_d W_d^T>``, computed from the input's Gram matrix,
and two selections solve it (``select``):

``"lasso"`` (the paper's): ``min 1/2 beta'G beta - b'beta + lam |beta|_1`` by
proximal gradient, ``lam`` raised by bisection to the largest value that
leaves at least ``k`` nonzero coefficients; the ``k`` largest ``|beta_c|``
are kept.

``"greedy"``: backward elimination: start from every channel and drop, one at
a time, the channel whose removal raises the least-squares error in ``beta``
least (``beta_c^2 / [G_S^-1]_cc``).

Then (``refine="exact"``, the default) B's weights on the kept channels and
its bias are rebuilt by ridge least squares (:func:`~tabconv_np.conversion.refit.ridge_gram`)
on the same calibration rows, which the converted network before B produces
(``calibrate="approx"``); ``refine=None`` only drops the other channels.
After the walk, the pruned channels are removed from both layers: A loses
those filters (and its bias entries), a batch norm between them those
channels, B those input channels; the result is smaller ordinary ``Conv2d``
(and ``BatchNorm2d``) layers that the prepared plan and every exact method run
unchanged, and whose MACs ``count_ops`` counts as they are.

``keep`` is per layer: the fraction of B's input channels kept,
``ceil(keep * C)`` of them, in (0, 1]; ``keep=1`` leaves the layer as it is.
Only the second convolution of a structurally safe pair is pruned
(:func:`channel_pairs`): within one chain (a ``Sequential``, or a residual
block's main branch, whose sum comes after its last convolution), A and B
both groups 1, only per-channel layers between them, so that A's output
feeds B alone.  Every other layer of a converted switch (the first
convolution of a block, whose input also feeds the shortcut; a convolution
after a container or a flatten; a linear layer; a grouped convolution)
stays exact, with the reason in its record.
"""
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import eigh

from ..activations import HardSigmoid, HardSwish, LeakyReLU, Sigmoid, Tanh
from ..errors import ConfigError
from ..layers import AvgPool2d, BatchNorm2d, Clip, Conv2d, Dropout, Linear, MaxPool2d, ReLU
from ..structure import Chain, Residual, branches, join, map_leaves, structure_of
from ..validate import as_choice, in_unit_interval
from .method import Method, register_method
from .refit import ridge_gram

#: Layers that act on each channel alone: a channel can be removed through them.
PER_CHANNEL = (ReLU, BatchNorm2d, MaxPool2d, AvgPool2d, Clip, Dropout, LeakyReLU, Sigmoid, Tanh,
               HardSigmoid, HardSwish)
#: The selections of the module docstring.
SELECTIONS = ("greedy", "lasso")


@dataclass(frozen=True)
class ChannelSettings:
    """Settings of the channel-pruning method.

    Attributes
    ----------
    keep : float in (0, 1], list or dict
        The fraction of each pruned layer's input channels kept (per-layer forms as in
        :mod:`tabconv_np.conversion.settings`).
    select : {"greedy", "lasso"}
        How the channels are chosen (module docstring); greedy gave the lower logit error on a
        validation split of training images (README, "Channel pruning").
    refine : {"exact", None}
        Rebuild the weights on the kept channels by least squares, or only drop the others.
    ridge : float >= 0
        Relative ridge of that rebuild (``alpha`` of :func:`~tabconv_np.conversion.refit.ridge_gram`).
    pairs : dict or None
        :func:`channel_pairs` of the network; filled in by ``convert``.
    """

    keep: object = 0.5
    select: str = "greedy"
    refine: object = "exact"
    ridge: float = 1e-3
    pairs: object = None

    def __post_init__(self):
        as_choice(self.select, "convert: select", SELECTIONS)
        as_choice(self.refine, "convert: refine", (None, "exact"))
        if isinstance(self.ridge, bool) or not isinstance(self.ridge, (int, float)) or not self.ridge >= 0:
            raise ConfigError(f"convert: ridge must be a number >= 0, got {self.ridge!r}")


def channel_pairs(body):
    """The convolution pairs whose channels can be pruned, read through the structure protocol.

    Parameters
    ----------
    body : Module

    Returns
    -------
    dict
        ``{B path: (A path, [paths of the batch norms between them])}``: B's input is A's
        output through per-channel layers only (:data:`PER_CHANNEL`), both in one chain,
        both groups 1.
    """
    pairs = {}

    def scan(items, prefix):
        for j, (name, b) in enumerate(items):
            if not (isinstance(b, Conv2d) and b.groups == 1):
                continue
            bns = []
            for n, m in reversed(items[:j]):
                if isinstance(m, Conv2d):
                    if m.groups == 1 and m.out_channels == b.in_channels:
                        pairs[join(prefix, name)] = (join(prefix, n), bns[::-1])
                    break
                if not isinstance(m, PER_CHANNEL):
                    break
                if isinstance(m, BatchNorm2d):
                    bns.append(join(prefix, n))

    def visit(m, path):
        node = structure_of(m, path)
        if node is None:
            return
        if isinstance(node, (Chain, Residual)):
            scan(node.items if isinstance(node, Chain) else node.main, path)
        for n, child in branches(node):
            if n in m.children:
                visit(child, join(path, n))

    visit(body, "")
    return pairs


def _why_not(path, layer):
    """Why ``layer`` at ``path`` is not the second convolution of a safe pair."""
    if isinstance(layer, Linear):
        return "a Linear layer"
    if layer.groups != 1:
        return f"a grouped convolution (groups={layer.groups})"
    return ("its input is not the output of a convolution before it in the same chain through "
            "per-channel layers only (e.g. a block's first conv, whose input also feeds the shortcut)")


def selection_gram(H, XtY, W):
    """``(G (C, C), b (C,))`` of the channel-selection quadratic (module docstring).

    Parameters
    ----------
    H : array (D, D)
        ``X'X`` of the input rows ``X`` (im2col column order: channel, then kernel position;
        ``D = C*kh*kw``).
    XtY : array (D, C_out)
        ``X'Y`` with the target rows ``Y`` net of the bias.
    W : array (C_out, C, kh, kw)
        Each channel's weights are scaled to unit Frobenius norm here.
    """
    C_out, C = W.shape[:2]
    k = W[0, 0].size
    Wl = W.reshape(C_out, C, k).astype(np.float64)
    norms = np.sqrt((Wl ** 2).sum(axis=(0, 2)))
    Wl = (Wl / np.where(norms > 0, norms, 1)[None, :, None]).reshape(C_out, C * k)
    G = (H * (Wl.T @ Wl)).reshape(C, k, C, k).sum(axis=(1, 3))
    b = (XtY * Wl.T).reshape(C, k * C_out).sum(axis=1)
    return G, b


def _ridge_of(G):
    return 1e-9 * max(float(np.trace(G)) / len(G), 1e-30)


def select_lasso(G, b, k, iters=300, steps=40):
    """Indices (sorted) of ``k`` channels by the LASSO in ``beta`` (module docstring)."""
    C = len(G)
    G = G + _ridge_of(G) * np.eye(C)
    L = float(eigh(G, eigvals_only=True, subset_by_index=[C - 1, C - 1])[0])

    def solve(lam, beta):
        z, t = beta.copy(), 1.0
        for _ in range(iters):
            g = z - (G @ z - b) / L
            new = np.sign(g) * np.maximum(np.abs(g) - lam / L, 0)
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = new + (t - 1) / t_new * (new - beta)
            beta, t = new, t_new
        return beta

    hi = float(np.abs(b).max())                       # from here up, every beta is 0
    lo = hi * 1e-6
    best = solve(lo, np.zeros(C))
    for _ in range(steps):
        if hi <= lo * 1.01:
            break
        mid = math.sqrt(lo * hi)
        trial = solve(mid, best)
        if np.count_nonzero(trial) >= k:
            lo, best = mid, trial
        else:
            hi = mid
    return np.sort(np.argsort(-np.abs(best), kind="stable")[:k])


def select_greedy(G, b, k):
    """Indices (sorted) of ``k`` channels by backward elimination in ``beta`` (module docstring)."""
    C = len(G)
    P = np.linalg.inv(G + _ridge_of(G) * np.eye(C))
    S = np.arange(C)
    while len(S) > k:
        beta = P @ b[S]
        j = int(np.argmin(beta ** 2 / np.diag(P)))
        P = P - np.outer(P[:, j], P[j]) / P[j, j]
        P, S = np.delete(np.delete(P, j, 0), j, 1), np.delete(S, j)
    return S


def _slice_conv(conv, out=None, inp=None):
    """``conv`` (groups 1) keeping the output channels ``out`` and input channels ``inp`` (None: all)."""
    W = conv.params["weight"]
    out = np.arange(W.shape[0]) if out is None else out
    inp = np.arange(W.shape[1]) if inp is None else inp
    new = Conv2d(len(inp), len(out), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                 bias="bias" in conv.params, method=conv.method)
    new.params["weight"][...] = W[out][:, inp]
    if "bias" in conv.params:
        new.params["bias"][...] = conv.params["bias"][out]
    return new


def _slice_bn(bn, keep):
    new = BatchNorm2d(len(keep), bn.eps)
    for name, v in bn.params.items():
        new.params[name][...] = v[keep]
    return new


def shrink(body, pairs, kept):
    """``body`` with the channels not in ``kept[B]`` removed from each pair ``pairs[B] = (A, bns)``.

    Parameters
    ----------
    body : Module
    pairs : dict
        From :func:`channel_pairs`.
    kept : dict
        ``{B path: sorted int array of B's input channels kept}``.

    Returns
    -------
    Module
        A copy with smaller ``Conv2d`` / ``BatchNorm2d`` layers (the others shared).
    """
    outs, ins = {}, dict(kept)
    for b, keep in kept.items():
        a, bns = pairs[b]
        outs[a] = keep
        outs.update({bn: keep for bn in bns})

    def fn(path, leaf):
        if isinstance(leaf, BatchNorm2d) and path in outs:
            return _slice_bn(leaf, outs[path])
        if path in outs or path in ins:
            return _slice_conv(leaf, outs.get(path), ins.get(path))
        return leaf

    return map_leaves(body, fn)


class ChannelPrune(Method):
    """Structured channel pruning with a least-squares rebuild (He et al. 2017)."""

    name = "channels"
    label = "kept input channels"
    Settings = ChannelSettings
    per_layer = ("keep",)

    def for_network(self, settings, body):
        return replace(settings, pairs=channel_pairs(body))

    def resolve(self, path, layer, values, settings):
        keep = values["keep"]
        if not in_unit_interval(keep, "(0, 1]"):
            raise ConfigError(f"convert: keep for {path} must be a fraction of its input channels in "
                              f"(0, 1], got {keep!r}")
        if path not in settings.pairs:
            return {"exact": _why_not(path, layer)}
        C = layer.in_channels
        k = math.ceil(keep * C)
        if k >= C:
            return {"exact": "keep = 1"}
        return {"k": k, "channels": C, "after": settings.pairs[path][0]}

    def fit(self, data, ls, settings, rng):
        layer = data.layer
        if "exact" in ls:
            return layer, {"kept": ls["exact"]}
        X, idx = data.sample_rows(rng)
        Y = data.target_rows(True)[0]
        X, Y = X.astype(np.float64), (Y if idx is None else Y[idx]).astype(np.float64)
        W, bias = layer.params["weight"], layer.params.get("bias")
        bias = np.zeros(len(W)) if bias is None else bias.astype(np.float64)
        n, sx = len(X), X.sum(0)
        H, XtY = X.T @ X, X.T @ Y
        del X
        G, b = selection_gram(H, XtY - np.outer(sx, bias), W)
        S = select_lasso(G, b, ls["k"]) if settings.select == "lasso" else select_greedy(G, b, ls["k"])
        new = Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                     layer.padding, layer.dilation, bias=True, method=layer.method)
        if settings.refine:                   # ridge on the kept channels' columns, centred
            ksz = W[0, 0].size
            cols = (S[:, None] * ksz + np.arange(ksz)).ravel()
            mx, my = sx[cols] / n, Y.mean(0)
            Ws, bs, _ = ridge_gram(H[np.ix_(cols, cols)] - n * np.outer(mx, mx),
                                   XtY[cols] - n * np.outer(mx, my), mx, my, settings.ridge)
            new.params["weight"][:, S] = Ws.reshape(len(Ws), len(S), *layer.kernel_size)
            new.params["bias"][...] = bs
        else:
            new.params["weight"][:, S] = W[:, S]
            new.params["bias"][...] = bias
        return new, {"k": ls["k"], "channels": ls["channels"], "after": ls["after"],
                     "kept_channels": S.tolist(), "select": settings.select, "refine": settings.refine}

    def skeleton(self, layer, ls, settings):
        return layer

    def finish(self, body, resolved, records, settings):
        if records is None:                   # counting without data: the first k channels
            kept = {p: np.arange(ls["k"]) for p, ls in resolved.items() if "k" in ls}
        else:
            kept = {r["name"]: np.asarray(r["kept_channels"]) for r in records if "kept_channels" in r}
            for r in records:
                a_of = [b for b in kept if settings.pairs[b][0] == r["name"]]
                if a_of:
                    r["filters"] = [len(kept[a_of[0]]), int(resolved[a_of[0]]["channels"])]
        return shrink(body, settings.pairs, kept) if kept else body

    def describe(self, record):
        own = f"{record['k']}/{record['channels']} in" if "k" in record else "exact"
        return own + (f", {record['filters'][0]}/{record['filters'][1]} out" if "filters" in record else "")

    def network_meta(self, settings):
        return {"select": settings.select, "refine": settings.refine}

    def layer_meta(self, record):
        meta = {"in": [record["k"], record["channels"]]} if "k" in record else {}
        return dict(meta, out=record["filters"]) if "filters" in record else meta


register_method(ChannelPrune())
