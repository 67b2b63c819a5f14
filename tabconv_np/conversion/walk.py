"""The calibration walk: one layer-by-layer pass over the calibration images.

The walk carries two activations through the network, the exact network's
and the converted network's so far, reading containers through the structure
protocol (:mod:`tabconv_np.structure`): a chain in order, a residual block's
main branch with its last layer fitted after the shortcut (so that it knows
what it is added to), a graph node by node.  At each weight layer of a switch
that is on it hands a :class:`~tabconv_np.conversion.calibration.LayerData`
to the method, and records the method's result.  Layers that stay exact, and
every other layer, are applied to both activations.
"""
import time

import numpy as np

from ..layers import ReLU
from ..progress import Progress
from ..structure import Chain, Dag, Residual, join, node_input, outputs_of, structure_of
from .calibration import LayerData, add_all, apply
from .masking import cosine_similarity
from .refit import refit_linear
from .switches import WEIGHT_LAYERS

#: Calibration images on which each layer's relative error is reported.
REL_ERROR_IMAGES = 200


class Pass:
    """One pass; ``walk(body, "", x, x)`` returns ``(new body, converted output, exact output)``.

    Parameters
    ----------
    method : Method
    switches : list of Switch
    on : list of bool
    layer_settings : dict
        ``{leaf path: resolved per-layer settings}`` for the leaves of switches that are on.
    common : ConversionSettings
    method_settings : the method's settings object
    refit_leaf : str or None
        The classifier to refit (the network's last Linear).
    reuse : dict
        ``{leaf path: (layer, record, unrefit)}`` of an earlier pass, reused for
        switches before ``reuse_before``.
    notes : list of str
    """

    def __init__(self, method, switches, on, layer_settings, common, method_settings, refit_leaf,
                 reuse, reuse_before, notes):
        self.method, self.on, self.layer_settings = method, on, layer_settings
        self.common, self.method_settings = common, method_settings
        self.switch_of = {leaf: s for s in switches for leaf in s.leaves}
        self.switch_names = {s.name: s for s in switches}
        self.refit_leaf, self.reuse, self.reuse_before = refit_leaf, reuse, reuse_before
        self.notes = notes
        self.sims = [None] * len(switches)
        self.records, self.converted, self.refit, self.unrefit = [], {}, None, None
        self.leaf_index = {leaf: i for i, leaf in enumerate(p for s in switches for p in s.leaves)}
        #: the layers this pass fits (the others are exact or reused), and a progress bar over them
        self.to_fit = [leaf for leaf in layer_settings
                       if on[self.switch_of[leaf].index] and self.switch_of[leaf].index >= reuse_before]
        self.bar = None

    def run(self, body, x, layout, desc):
        """``walk(body, "", x, x, layout)`` with one progress bar over the layers fitted, named ``desc``."""
        with Progress(len(self.to_fit), f"{desc} ({len(self.to_fit)} layers, {len(x)} images)",
                      enabled=self.common.progress) as self.bar:
            return self.walk(body, "", x, x, layout)

    def walk(self, m, path, xa, xe, layout, relu=False, shortcut=None):
        """``(new module, converted output, exact output)`` of ``m`` at ``path``.

        ``relu``: a ReLU follows (after adding ``shortcut``, a pair of
        converted and exact shortcut outputs, when given).
        """
        node = structure_of(m, path)
        if node is None:
            if isinstance(m, WEIGHT_LAYERS) and path in self.switch_of:
                out, ya, ye = self.leaf(m, path, xa, xe, layout, relu, shortcut)
            else:
                out, ya, ye = m, apply(m, xa, layout), apply(m, xe, layout)
        elif isinstance(node, Chain):
            items, ya, ye = self._chain(node.items, path, xa, xe, layout)
            out = type(m).rebuild(Chain(items), m)
        elif isinstance(node, Residual):
            *head, last = node.main
            main, ha, he = self._chain(head, path, xa, xe, layout, last_relu=isinstance(last[1], ReLU))
            short, sa, se = self._chain(node.shortcut, path, xa, xe, layout)
            act = node.act == "relu"
            sub, ya, ye = self.walk(last[1], join(path, last[0]), ha, he, layout, relu=act,
                                    shortcut=(sa, se))
            ya += sa
            ye += se
            if act:
                np.maximum(ya, 0, out=ya)
                np.maximum(ye, 0, out=ye)
            out = type(m).rebuild(Residual(tuple(main) + ((last[0], sub),), tuple(short), node.act), m)
        else:
            vals, nodes = {"input": (xa, xe)}, []
            for n, inputs, child in node.nodes:
                if child is None:
                    vals[n] = (add_all([vals[v][0] for v in inputs]), add_all([vals[v][1] for v in inputs]))
                    nodes.append((n, inputs, None))
                elif getattr(child, "multi_input", False):     # a join: applied to both
                    pairs = node_input(child, inputs, vals)
                    vals[n] = (child.forward([p[0] for p in pairs], layout),
                               child.forward([p[1] for p in pairs], layout))
                    nodes.append((n, inputs, child))
                else:
                    sub, a, e = self.walk(child, join(path, n), *vals[inputs[0]], layout)
                    vals[n] = (a, e)
                    nodes.append((n, inputs, sub))
            ya, ye = vals[outputs_of(node)[0]]
            out = type(m).rebuild(Dag(tuple(nodes), node.output), m)
        if path in self.switch_names:
            self.sims[self.switch_names[path].index] = cosine_similarity(ya, ye)
        return out, ya, ye

    def _chain(self, items, path, xa, xe, layout, last_relu=False):
        """Walk ``(name, module)`` items in order; each is told whether a ReLU follows it."""
        new = []
        for i, (n, child) in enumerate(items):
            nxt = items[i + 1][1] if i + 1 < len(items) else None
            follows = isinstance(nxt, ReLU) or (nxt is None and last_relu)
            sub, xa, xe = self.walk(child, join(path, n), xa, xe, layout, relu=follows)
            new.append((n, sub))
        return new, xa, xe

    def leaf(self, m, path, xa, xe, layout, relu=False, shortcut=None):
        s = self.switch_of[path]
        ye = apply(m, xe, layout)
        exact_layer = m
        if path == self.refit_leaf:
            ya_exact = apply(m, xa, layout)
            refit, lam = refit_linear(m, xa, ye, self.common.ridge_alpha)
            before = float(np.mean((ya_exact - ye) ** 2))
            after = float(np.mean((apply(refit, xa, layout) - ye) ** 2))
            if after < before:
                exact_layer = refit
                self.refit = {"layer": path, "alpha": self.common.ridge_alpha, "lambda": lam,
                              "mse_before": before, "mse_after": after}
                self.unrefit = m
            elif self.reuse_before == 0:          # said once, in the first pass
                self.notes.append(f"classifier refit of {path} skipped: it would not lower the "
                                  f"calibration error to the exact logits ({before:.3g} -> {after:.3g})")
        if not self.on[s.index]:
            return exact_layer, apply(exact_layer, xa, layout), ye
        t0 = time.perf_counter()
        reused = self.reuse.get(path) if s.index < self.reuse_before else None
        ya = None
        if reused is not None:
            layer, rec, unrefit = reused
            rec = dict(rec)
            if self.refit and path == self.refit_leaf:
                self.unrefit = unrefit
        else:
            rng = np.random.default_rng(np.random.SeedSequence([self.common.seed, self.leaf_index[path]]))
            data = LayerData(path, exact_layer, xa, xe, ye, layout, self.common.calibrate, relu, shortcut,
                             self.common.max_rows, self.notes)
            ls = self.layer_settings[path]
            layer, method_rec = self.method.fit(data, ls, self.method_settings, rng)
            unrefit = self.method.transfer(layer, m) if path == self.refit_leaf else None
            if path == self.refit_leaf:
                self.unrefit = unrefit
            rec = {"name": path, "switch": s.name, **method_rec}
            ya = self.method.refine(layer, data, ls, self.method_settings, rng)
        if ya is None:
            ya = apply(layer, xa, layout)
        sub = slice(0, REL_ERROR_IMAGES)
        ref = apply(exact_layer, xa[sub], layout)
        rec["rel_error"] = float(np.linalg.norm((ya[sub] - ref).ravel())
                                 / max(np.linalg.norm(ref.ravel()), 1e-30))
        rec["seconds"] = time.perf_counter() - t0
        self.records.append(rec)
        self.converted[path] = (layer, rec, unrefit)
        if reused is None and self.bar is not None:
            self.bar.update(1, path)
        return layer, ya, ye
