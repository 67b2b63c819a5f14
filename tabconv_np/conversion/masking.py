"""Priority masking: which switches stay exact, by the drop in similarity to the exact network.

With every switch converted, measure at the output of each switch the cosine
similarity of the converted and the exact network's activations (whole
calibration tensor flattened), take the *drop* in similarity from the
previous switch (``1 - sim`` for the first), and keep exact the
``floor(M * L / 100)`` switches with the largest drop.  (The TabConv authors'
public code ranks by the largest *increase* and shifts the indices by 2, an
apparent sign slip against the paper's wording; this is the paper's
"similarity drop".)
"""
import math

import numpy as np

from ..errors import ConfigError
from ..structure import Chain, Dag, join, node_input, outputs_of, structure_of
from .calibration import add_all, apply
from .switches import find_switches


def cosine_similarity(a, b):
    """Cosine similarity of two arrays flattened (float64); 1.0 when both are zero."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def masked_count(mask_rate, L):
    """``floor(mask_rate * L / 100)``: how many of ``L`` switches masking rate ``M`` keeps exact."""
    return int(math.floor(mask_rate * L / 100 + 1e-9))


def masking_warning(mask_rate, L):
    """The warning text when ``mask_rate`` of ``L`` switches masks none (rate > 0), else None."""
    if mask_rate is None or float(mask_rate) <= 0 or masked_count(float(mask_rate), L) or not L:
        return None
    return (f"mask rate {float(mask_rate):g}% of {L} switches rounds down to 0 switches: nothing is masked "
            f"(a rate of at least {math.ceil(100 / L)}% keeps one exact)")


def priority_mask(similarities, mask_rate, candidates=None):
    """Switches to keep exact: the ``floor(mask_rate * L / 100)`` largest similarity drops.

    Parameters
    ----------
    similarities : sequence of float
        Cosine similarity of the all-converted and the exact network at each switch's output.
    mask_rate : float
        ``M`` in percent (0..100).
    candidates : sequence of bool, optional
        Switches that may be masked (default all).

    Returns
    -------
    masked : list of int
        Switch indices, sorted.
    drops : list of float
        ``drop[0] = 1 - sim[0]``, ``drop[i] = sim[i-1] - sim[i]``.
    """
    sims = [float(s) for s in similarities]
    L = len(sims)
    if not 0 <= mask_rate <= 100:
        raise ConfigError(f"mask_rate must be in [0, 100] (percent), got {mask_rate!r}")
    drops = [1.0 - sims[0]] + [sims[i - 1] - sims[i] for i in range(1, L)] if L else []
    n = masked_count(mask_rate, L)
    cand = [i for i in range(L) if candidates is None or candidates[i]]
    ranked = sorted(cand, key=lambda i: (-drops[i], i))
    return sorted(ranked[:n]), drops


def _forward_record(m, x, layout, path, want, out):
    """Forward ``x`` through ``m``, storing the output of every module whose path is in ``want``.

    Chains and graphs are entered; a residual block or a leaf is applied whole.
    """
    node = structure_of(m, path)
    if isinstance(node, Chain):
        for n, child in node.items:
            x = _forward_record(child, x, layout, join(path, n), want, out)
        y = x
    elif isinstance(node, Dag):
        vals = {"input": x}
        for n, inputs, child in node.nodes:
            if child is not None:
                vals[n] = _forward_record(child, node_input(child, inputs, vals), layout, join(path, n),
                                          want, out)
            else:
                vals[n] = add_all([vals[v] for v in inputs])
        y = vals[outputs_of(node)[0]]
    else:
        y = apply(m, x, layout)
    if path in want:
        out[path] = y
    return y


def switch_similarities(converted, exact_net, images):
    """Cosine similarity of two networks' activations at every switch output, on ``images``.

    The criterion of priority masking, measured on any images (e.g. held-out
    images, to see how far the calibration similarities generalise).

    Parameters
    ----------
    converted, exact_net : Network
        Same switch structure (a converted network and its exact origin).
    images : array (N, C, H, W)

    Returns
    -------
    dict
        ``{switch name: similarity}`` in forward order.
    """
    sw = [s.name for s in find_switches(exact_net.body)]
    res = []
    for net in (converted, exact_net):
        x = net.normalize(np.asarray(images))
        if net.layout == "NHWC":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        rec = {}
        _forward_record(net.body, x, net.layout, "", set(sw), rec)
        res.append(rec)
    return {n: cosine_similarity(res[0][n], res[1][n]) for n in sw}
