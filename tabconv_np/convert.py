"""Converting a trained network into a TabConv table network.

``convert(net, calibration_images, codebooks=C, prototypes=K)`` does, in order:

1. fold every batch norm into the conv before it (``fold_batchnorm``: exact);
2. split the network into *switches*, the units that are either all tables or
   all exact, at the TabConv authors' granularity: for a ResNet the stem conv,
   each BasicBlock (its two 3x3 convs and its 1x1 shortcut conv together) and
   the final Linear (10 switches for ResNet-18, 18 for ResNet-34; the
   authors' code has 19 for ResNet-34 by an index quirk); for other networks
   every conv and every linear layer (9 for NIN, 5 for LeNet);
3. walk the network layer by layer on the calibration images (training
   images, never test images), carrying two activations: the exact network's
   and the table network's as converted so far.  Each layer of a switch that
   is on learns its prototypes (k-means per subspace, :mod:`tabconv_np.pq`)
   from the im2col rows it sees in the table network (``calibrate="approx"``,
   the default: it learns what the tables before it produce) or in the exact
   network (``calibrate="exact"``: each layer as if the layers before it were
   exact), and its table is built from its (BN-folded) weights.  Beyond the
   authors' method, ``refine="exact"`` then refits the table entries by
   ridge-regularised least squares (:func:`tabconv_np.tables.fit_tables`) so
   that the layer reproduces the *exact* network's output at that point on
   the calibration codes, correcting the error of the tables before it; the
   fit ignores errors a following ReLU would clip, and a block's second conv
   also absorbs the error of the shortcut it is added to;
4. optionally refit the final Linear in closed form (ridge regression of the
   exact network's logits on the table network's features);
5. optionally *priority masking* (``mask_rate=M``, in percent): with every
   switch a table, measure at the output of each switch the cosine similarity
   of the table network's and the exact network's activations (whole
   calibration tensor flattened), take the *drop* in similarity from the
   previous switch (``1 - sim`` for the first), and keep exact the
   ``floor(M * L / 100)`` switches with the largest drop; the switches after
   the first masked one are then converted again on the new activations.
   (The authors' public code ranks by the largest *increase* and shifts the
   indices by 2, an apparent sign slip against the paper's wording; this is
   the paper's "similarity drop".)

:func:`op_reduction` reports what the conversion saves, always naming the
convention: ``"paper"`` (table lookups and their adds, plus the exact layers'
MACs, against the exact network's MACs; encoding is not counted) and
``"full"`` (every arithmetic operation, encoding included, against every
arithmetic operation of the BN-folded exact network).
"""
import math
import time

import numpy as np

from .errors import ConfigError, ShapeError
from .fold import fold_batchnorm
from .layers import BasicBlock, Conv2d, Linear, ReLU, Sequential
from .network import Network
from .pq import K_MAX, K_MIN, ProductQuantizer
from .tables import TableConv2d, TableLinear, fit_tables

__all__ = ["convert", "find_switches", "op_reduction", "ConversionResult", "Switch",
           "priority_mask", "cosine_similarity", "table_structure", "augment_images",
           "switch_similarities"]

#: Default cap on the calibration rows k-means sees per layer (seeded subsample).
MAX_ROWS = 50_000
#: Images per forward chunk during calibration (bounds the im2col buffers).
BATCH = 250
#: Calibration images on which each layer's relative error is reported.
REL_ERROR_IMAGES = 200


class Switch:
    """One unit that is all tables or all exact.

    Attributes
    ----------
    index : int
    name : str
        Dotted path of its module in the network body (``conv1``, ``layer1.0``, ``fc``).
    module : Module
        The (BN-folded) module.
    leaves : list of str
        Dotted paths of its Conv2d / Linear layers, in forward order.
    """

    def __init__(self, index, name, module, leaves):
        self.index, self.name, self.module, self.leaves = index, name, module, leaves

    def __repr__(self):
        return f"Switch({self.index}, {self.name!r}, leaves={self.leaves})"


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _leaves(module, prefix):
    if isinstance(module, (Conv2d, Linear)):
        return [prefix]
    if isinstance(module, BasicBlock):
        c = module.children
        order = ["conv1", "conv2"] + (["downsample"] if "downsample" in c else [])
        return [p for n in order for p in _leaves(c[n], _join(prefix, n))]
    out = []
    for n, child in module.children.items():
        out += _leaves(child, _join(prefix, n))
    return out


def find_switches(body):
    """The switches of a network body, in forward order (see the module docstring).

    Parameters
    ----------
    body : Module
        Usually ``Network.body``; BasicBlocks become one switch each, every
        other Conv2d / Linear one switch.

    Returns
    -------
    list of Switch
    """
    found = []

    def walk(m, prefix):
        if isinstance(m, BasicBlock):
            found.append((prefix, m))
        elif isinstance(m, (Conv2d, Linear)):
            found.append((prefix, m))
        else:
            for n, child in m.children.items():
                walk(child, _join(prefix, n))

    walk(body, "")
    return [Switch(i, name, m, _leaves(m, name)) for i, (name, m) in enumerate(found)]


# -------------------------------------------------------------- settings
def _per_switch(value, switches, what, on=None):
    """Resolve a per-switch setting to ``{leaf path: value}``.

    ``value`` is one value for every layer, a list with one value per switch,
    or a dict keyed by leaf path, switch name or a glob pattern over leaf
    paths (``"*.downsample.*"``), looked up in that order, with an optional
    ``"*"`` / ``"default"`` key for the rest.
    """
    leaves = {leaf: s for s in switches for leaf in s.leaves}
    if isinstance(value, dict):
        from fnmatch import fnmatchcase
        default = value.get("*", value.get("default"))
        known = set(leaves) | {s.name for s in switches} | {"*", "default"}
        patterns = [k for k in value if k not in known and any(ch in k for ch in "*?[")]
        unknown = [k for k in value if k not in known and k not in patterns]
        unused = [p for p in patterns if not any(fnmatchcase(leaf, p) for leaf in leaves)]
        if unknown or unused:
            raise ConfigError(f"{what}: unknown switch or layer name(s) {unknown + unused}; switches "
                              f"are {[s.name for s in switches]}")
        out = {}
        for leaf, s in leaves.items():
            v = value.get(leaf, value.get(s.name))
            if v is None:
                v = next((value[p] for p in patterns if fnmatchcase(leaf, p)), default)
            if v is None and (on is None or on[s.index]):
                raise ConfigError(f"{what}: no value for layer {leaf} (switch {s.name}); "
                                  f"add it or a '*' default")
            out[leaf] = v
        return out
    if isinstance(value, (list, tuple)):
        if len(value) != len(switches):
            raise ConfigError(f"{what}: a list needs one value per switch ({len(switches)}: "
                              f"{[s.name for s in switches]}), got {len(value)}")
        return {leaf: value[s.index] for leaf, s in leaves.items()}
    return {leaf: value for leaf in leaves}


def _codebooks_for(spec, D, leaf):
    """``C`` for a layer with rows of length D: an int, or ``"D/ds"`` meaning ``ceil(D/ds)``."""
    if isinstance(spec, str):
        s = spec.replace(" ", "")
        if s.lower().startswith("d/"):
            try:
                ds = int(s[2:])
            except ValueError:
                ds = 0
            if ds >= 1:
                return max(1, min(D, math.ceil(D / ds)))
        raise ConfigError(f"codebooks for {leaf}: expected an int or 'D/<subspace length>', got {spec!r}")
    if isinstance(spec, bool) or not isinstance(spec, (int, np.integer)) or spec < 1:
        raise ConfigError(f"codebooks for {leaf}: expected an int >= 1, got {spec!r}")
    return int(min(spec, D))


def _flags(switches_arg, switches):
    L = len(switches)
    if switches_arg is None:
        return [True] * L
    if isinstance(switches_arg, str):
        switches_arg = [s for s in switches_arg.replace(" ", "").split(",") if s]
    if isinstance(switches_arg, dict):
        names = {s.name for s in switches}
        bad = [k for k in switches_arg if k not in names]
        if bad:
            raise ConfigError(f"switches: unknown switch name(s) {bad}; switches are {sorted(names)}")
        return [bool(int(switches_arg.get(s.name, 1))) for s in switches]
    flags = list(switches_arg)
    if len(flags) != L:
        raise ConfigError(f"switches: expected {L} values (one per switch: "
                          f"{[s.name for s in switches]}), got {len(flags)}")
    try:
        return [bool(int(f)) for f in flags]
    except (TypeError, ValueError):
        raise ConfigError(f"switches: expected 0/1 values, got {switches_arg!r}") from None


# ---------------------------------------------------------- computations
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


def priority_mask(similarities, mask_rate, candidates=None):
    """Switches to keep exact: the ``floor(mask_rate * L / 100)`` largest similarity drops.

    Parameters
    ----------
    similarities : sequence of float
        Cosine similarity of the all-table and the exact network at each switch's output.
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
    n = int(math.floor(mask_rate * L / 100 + 1e-9))
    cand = [i for i in range(L) if candidates is None or candidates[i]]
    ranked = sorted(cand, key=lambda i: (-drops[i], i))
    return sorted(ranked[:n]), drops


def _apply(module, x, layout, batch=BATCH):
    """``module.forward`` over ``x`` in chunks of ``batch`` images."""
    if len(x) <= batch:
        return module.forward(x, layout)
    return np.concatenate([module.forward(x[i:i + batch], layout) for i in range(0, len(x), batch)])


def _rows(layer, x, layout, idx, batch=BATCH):
    """The input rows of ``layer`` (im2col for a conv) on ``x``, only those at ``idx`` (sorted)."""
    from .functional import conv_output_size, im2col_rows
    if isinstance(layer, Linear):
        return np.ascontiguousarray(x[idx] if idx is not None else x, np.float32)
    H, W = (x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2])
    Ho, Wo = conv_output_size((H, W), layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    P = Ho * Wo
    out = []
    for i in range(0, len(x), batch):
        r, _ = im2col_rows(x[i:i + batch], layer.kernel_size, layer.stride, layer.padding,
                           layer.dilation, layout)
        if idx is None:
            out.append(r)
        else:
            lo, hi = np.searchsorted(idx, [i * P, min(len(x), i + batch) * P])
            out.append(r[idx[lo:hi] - i * P])
    return np.ascontiguousarray(np.concatenate(out))


def _n_rows(layer, x, layout):
    from .functional import conv_output_size
    if isinstance(layer, Linear):
        return len(x)
    H, W = (x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2])
    Ho, Wo = conv_output_size((H, W), layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    return len(x) * Ho * Wo


def _to_rows(y, layout):
    """Layer output ``y`` as rows ``(N*Ho*Wo, M)`` in (n, ho, wo) order (2-d output: itself)."""
    if y.ndim == 2:
        return y
    if layout == "NCHW":
        y = y.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(y).reshape(-1, y.shape[-1])


def _from_rows(rows, like, layout):
    """Inverse of :func:`_to_rows` for an output shaped like ``like``."""
    if like.ndim == 2:
        return rows
    if layout == "NCHW":
        N, M, Ho, Wo = like.shape
        return np.ascontiguousarray(rows.reshape(N, Ho, Wo, M).transpose(0, 3, 1, 2))
    return rows.reshape(like.shape)


def _table_codes(layer, x, layout, batch=BATCH):
    """Codes ``(rows, C)`` of the input rows of table ``layer`` on ``x``, in chunks."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        rows = layer.lower(xb, layout)[0] if isinstance(layer, TableConv2d) else xb
        out.append(layer.encode(rows))
    return np.concatenate(out)


def _ridge(features, targets, alpha):
    """Ridge regression with an unpenalised intercept: ``(weight (M, F), bias (M,))``.

    ``alpha`` is relative: the penalty is ``alpha * trace(Xc'Xc) / F`` on the
    centred features ``Xc``.
    """
    X = np.asarray(features, np.float64)
    Y = np.asarray(targets, np.float64)
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    G = Xc.T @ Xc
    lam = alpha * np.trace(G) / max(G.shape[0], 1)
    G[np.diag_indices_from(G)] += max(lam, 1e-12)
    W = np.linalg.solve(G, Xc.T @ Yc)          # (F, M)
    b = my - mx @ W
    return W.T.astype(np.float32), b.astype(np.float32), float(lam)


# --------------------------------------------------------------- result
class ConversionResult:
    """What :func:`convert` returns.

    Attributes
    ----------
    network : Network
        The table network (BN folded; switches that are off stay exact).
    exact : Network
        The BN-folded exact network it was converted from.
    switches : list of str
        Switch names in forward order.
    on : list of bool
        Final state of each switch (True: tables).
    masked : list of str
        Switches kept exact by priority masking.
    similarities : list of float or None
        Per switch, cosine similarity of the all-table network and the exact
        network at the switch's output on the calibration images (the masking
        criterion); ``drops`` the similarity drops derived from them.
    final_similarities : list of float
        The same for the returned network.
    layers : list of dict
        Per converted layer: ``name, switch, D, C, K, Ds, rows, rows_used,
        rel_error`` (relative L2 error of the table layer against the exact
        layer on the same input, the first ``REL_ERROR_IMAGES`` calibration
        images: optimistic, they are training rows of the k-means), ``seconds``.
    refit : dict or None
        Classifier refit: ``layer, alpha, lambda, mse_before, mse_after``
        (calibration MSE to the exact logits).
    notes : list of str
        Things the user should know (subsampling, capped K, skipped steps).
    seconds : float
    settings : dict
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def network_without_refit(self):
        """The table network with the classifier as it was before the refit (shares modules)."""
        if not self.refit:
            return self.network
        body = _replace(self.network.body, self.refit["layer"], self._unrefit)
        return Network(body, self.network.input_shape, self.network.preprocess,
                       self.network.layout, dict(self.network.meta, classifier_refit=False))

    def accuracies(self, images, labels, batch=250):
        """Top-1 accuracy of the table network with and without the classifier refit.

        When the refit layer is the last child of the body (ResNet, LeNet),
        the features before it are computed once for both.

        Returns
        -------
        dict
            ``{"table": acc, "without_refit": acc or None, "seconds": s,
            "predictions": int array (N,)}`` (``seconds``: the table network's
            forward passes; ``predictions``: its predicted classes).
        """
        import time as _time
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim == 3 and self.network.input_shape[0] == 1:
            images = images[:, None]
        net = self.network
        t0 = _time.perf_counter()
        body = net.body
        last = list(body.children)[-1] if isinstance(body, Sequential) and body.children else None
        if not self.refit or self.refit["layer"] != last:
            pred = net.predict(images, batch).argmax(1)
            dt = _time.perf_counter() - t0
            other = (float(np.mean(self.network_without_refit().predict(images, batch).argmax(1) == labels))
                     if self.refit else None)
            return {"table": float(np.mean(pred == labels)), "without_refit": other, "seconds": dt,
                    "predictions": pred}
        head = Sequential(list(body.children.items())[:-1])
        fc = body.children[last]
        feats = Network(head, net.input_shape, net.preprocess, net.layout).predict(images, batch)
        y1 = fc.forward(feats, net.layout)
        dt = _time.perf_counter() - t0
        y0 = self._unrefit.forward(feats, net.layout)
        return {"table": float(np.mean(y1.argmax(1) == labels)),
                "without_refit": float(np.mean(y0.argmax(1) == labels)), "seconds": dt,
                "predictions": y1.argmax(1)}

    def to_dict(self):
        keys = ("switches", "on", "masked", "similarities", "drops", "final_similarities",
                "layers", "refit", "notes", "seconds", "settings")
        return {k: getattr(self, k) for k in keys}

    def summary(self):
        """A few lines per switch: state, similarity, (C, K) of its layers."""
        lines = [f"{'switch':<12} {'state':<6} {'sim(all-table)':>14} {'drop':>8} {'sim(final)':>10}  layers (C, K, rel.err)"]
        by_switch = {}
        for r in self.layers:
            by_switch.setdefault(r["switch"], []).append(r)
        for i, name in enumerate(self.switches):
            sim = f"{self.similarities[i]:.4f}" if self.similarities else "-"
            drop = f"{self.drops[i]:.4f}" if self.drops else "-"
            fin = f"{self.final_similarities[i]:.4f}" if self.final_similarities else "-"
            state = "table" if self.on[i] else ("masked" if name in self.masked else "exact")
            ls = ", ".join(f"{r['name'].split('.')[-1] if '.' in r['name'] else r['name']}"
                           f"({r['C']},{r['K']},{r['rel_error']:.3f})" for r in by_switch.get(name, []))
            lines.append(f"{name:<12} {state:<6} {sim:>14} {drop:>8} {fin:>10}  {ls}")
        if self.refit:
            r = self.refit
            lines.append(f"classifier refit ({r['layer']}): calibration MSE to exact logits "
                         f"{r['mse_before']:.4f} -> {r['mse_after']:.4f}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _replace(body, path, new):
    """A shallow copy of ``body`` with the module at dotted ``path`` replaced by ``new``."""
    import copy
    head, _, rest = path.partition(".")
    clone = copy.copy(body)
    clone.children = type(body.children)(body.children)
    clone.children[head] = new if not rest else _replace(body.children[head], rest, new)
    return clone


# ----------------------------------------------------------------- walk
class _Pass:
    """One layer-by-layer pass over the calibration data (see the module docstring)."""

    def __init__(self, switches, on, settings, layout, calibrate, max_rows, iters, init, seed,
                 progress, refit_leaf, alpha, reuse, reuse_before, notes, refine=None,
                 refine_ridge=1.0, refine_sweeps=3, refine_rows=200_000, refine_relu=True):
        self.switch_of = {leaf: s for s in switches for leaf in s.leaves}
        self.switch_names = {s.name: s for s in switches}
        self.on, self.settings, self.layout = on, settings, layout
        self.calibrate, self.max_rows, self.iters, self.init = calibrate, max_rows, iters, init
        self.seed, self.progress = seed, progress
        self.refit_leaf, self.alpha = refit_leaf, alpha
        self.reuse, self.reuse_before = reuse, reuse_before
        self.notes = notes
        self.refine, self.refine_ridge = refine, refine_ridge
        self.refine_sweeps, self.refine_rows = refine_sweeps, refine_rows
        self.refine_relu = refine_relu
        self.sims = [None] * len(switches)
        self.records, self.converted, self.refit, self.unrefit = [], {}, None, None
        self.leaf_index = {leaf: i for i, leaf in enumerate(l for s in switches for l in s.leaves)}
        self.n_leaves = len(self.leaf_index)

    def walk(self, m, path, xa, xe, relu=False, shortcut=None):
        """``(new module, table-network output, exact output)`` of ``m`` at ``path``.

        ``relu``: a ReLU follows (after adding ``shortcut``, a pair of approximate
        and exact shortcut outputs, when given); used by the table refinement.
        """
        if isinstance(m, BasicBlock):
            if m.batchnorm:
                raise ConfigError(f"convert: block {path} still has batch norm (fold it first)")
            c = m.children
            c1, ha, he = self.walk(c["conv1"], _join(path, "conv1"), xa, xe, relu=True)
            np.maximum(ha, 0, out=ha)
            np.maximum(he, 0, out=he)
            block = BasicBlock(m.in_planes, m.planes, m.stride, m.eps, batchnorm=False)
            if "downsample" in c:
                ds, sa, se = self.walk(c["downsample"], _join(path, "downsample"), xa, xe)
            else:
                ds, sa, se = None, xa, xe
            # conv2's output is added to the shortcut, then ReLU: with refine="exact" its table
            # aims at the exact block output minus the (approximate) shortcut it will be added to
            c2, ya, ye = self.walk(c["conv2"], _join(path, "conv2"), ha, he, relu=True,
                                   shortcut=(sa, se))
            block.children["conv1"], block.children["conv2"] = c1, c2
            if ds is not None:
                block.children["downsample"] = ds
            ya += sa
            ye += se
            np.maximum(ya, 0, out=ya)
            np.maximum(ye, 0, out=ye)
            out = block
        elif isinstance(m, (Conv2d, Linear)):
            out, ya, ye = self.leaf(m, path, xa, xe, relu, shortcut)
        elif m.children:
            new = []
            items = list(m.children.items())
            for i, (n, child) in enumerate(items):
                nxt = items[i + 1][1] if i + 1 < len(items) else None
                sub, xa, xe = self.walk(child, _join(path, n), xa, xe, relu=isinstance(nxt, ReLU))
                new.append((n, sub))
            if not isinstance(m, Sequential):
                raise ConfigError(f"convert: cannot walk module {path} of type {type(m).__name__}")
            out, ya, ye = Sequential(new), xa, xe
        else:
            ya, ye = _apply(m, xa, self.layout), _apply(m, xe, self.layout)
            out = m
        if path in self.switch_names:
            self.sims[self.switch_names[path].index] = cosine_similarity(ya, ye)
        return out, ya, ye

    def leaf(self, m, path, xa, xe, relu=False, shortcut=None):
        s = self.switch_of[path]
        ye = _apply(m, xe, self.layout)
        exact_layer = m
        if path == self.refit_leaf:
            ya_exact = _apply(m, xa, self.layout)
            W, b, lam = _ridge(xa, ye, self.alpha)
            exact_layer = Linear(m.in_features, m.out_features, bias=True)
            exact_layer.params["weight"][...] = W
            exact_layer.params["bias"][...] = b
            ya_refit = _apply(exact_layer, xa, self.layout)
            self.refit = {"layer": path, "alpha": self.alpha, "lambda": lam,
                          "mse_before": float(np.mean((ya_exact - ye) ** 2)),
                          "mse_after": float(np.mean((ya_refit - ye) ** 2))}
            self.unrefit = m
        if not self.on[s.index]:
            return exact_layer, _apply(exact_layer, xa, self.layout), ye
        t0 = time.perf_counter()
        C_spec, K = self.settings[path]
        D = m.in_features if isinstance(m, Linear) else m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        C = _codebooks_for(C_spec, D, path)
        n = _n_rows(m, xa, self.layout)
        reused = self.reuse.get(path) if s.index < self.reuse_before else None
        if reused is not None:
            rec = dict(reused[1])
            layer, unrefit_table = reused[0], reused[2]
            if self.refit and path == self.refit_leaf:
                self.unrefit = unrefit_table
        else:
            ss = np.random.SeedSequence([self.seed, self.leaf_index[path]])
            rng = np.random.default_rng(ss)
            idx = None
            if n > self.max_rows:
                idx = np.sort(rng.choice(n, self.max_rows, replace=False))
            src = xa if self.calibrate == "approx" else xe
            rows = _rows(m, src, self.layout, idx)
            desc = f"{path} [{self.leaf_index[path] + 1}/{self.n_leaves}]"
            pq = ProductQuantizer(C, K, iters=self.iters, init=self.init,
                                  seed=int(rng.integers(2**31)), name=path, progress=self.progress)
            import warnings
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pq.name = desc
                pq.fit(rows)
            for w in caught:
                self.notes.append(str(w.message))
            del rows
            make = TableLinear.from_linear if isinstance(m, Linear) else TableConv2d.from_conv
            layer = make(exact_layer, pq.codebooks)
            unrefit_table = make(m, pq.codebooks) if path == self.refit_leaf else None
            if unrefit_table is not None:
                self.unrefit = unrefit_table
            rec = {"name": path, "switch": s.name, "D": D, "C": pq.C, "K": pq.K, "K_requested": K,
                   "Ds": pq.Ds, "rows": int(n), "rows_used": int(len(idx) if idx is not None else n),
                   "calibrate": self.calibrate, "refine": self.refine}
            if idx is not None:
                self.notes.append(f"{path}: k-means on {len(idx):,} of {n:,} calibration rows "
                                  f"(seeded subsample, max_rows={self.max_rows:,})")
            if self.refine:
                codes = _table_codes(layer, xa, self.layout)
                shift = None
                if self.refine == "exact":
                    target = ye
                    if shortcut is not None:
                        # relu(out + sa) should be relu(ye + se): aim at ye + se - sa
                        target = ye + shortcut[1] - shortcut[0]
                        shift = _to_rows(shortcut[0], self.layout)
                else:
                    target = _apply(exact_layer, xa, self.layout)
                Y = _to_rows(target, self.layout)
                b = layer.params.get("bias")
                if b is not None:
                    Y = Y - b
                    shift = b if shift is None else shift + b
                sel = slice(None)
                if len(Y) > self.refine_rows:
                    sel = np.sort(rng.choice(len(Y), self.refine_rows, replace=False))
                    shift = shift[sel] if shift is not None and np.ndim(shift) == 2 else shift
                layer.params["table"][...] = fit_tables(
                    codes[sel], Y[sel], layer.params["table"], self.refine_ridge, self.refine_sweeps,
                    relu=relu and self.refine_relu, shift=shift)
                ya = _from_rows(layer._lookup(codes), ye, self.layout)
                del codes, Y, target, shift
        if not (self.refine and reused is None):
            ya = _apply(layer, xa, self.layout)
        sub = slice(0, REL_ERROR_IMAGES)
        ref = _apply(exact_layer, xa[sub], self.layout)
        rec["rel_error"] = float(np.linalg.norm((ya[sub] - ref).ravel())
                                 / max(np.linalg.norm(ref.ravel()), 1e-30))
        rec["seconds"] = time.perf_counter() - t0
        self.records.append(rec)
        self.converted[path] = (layer, rec, unrefit_table)
        return layer, ya, ye


def _last_linear(body):
    leaves = _leaves(body, "")
    mods = dict(body.modules())
    if leaves and isinstance(mods.get(leaves[-1]), Linear):
        return leaves[-1]
    return None


def convert(model, calibration_images, codebooks=8, prototypes=256, switches=None, mask_rate=None,
            refit_classifier=True, seed=0, progress=None, calibrate="approx", max_rows=MAX_ROWS,
            iters=16, init="auto", ridge_alpha=1e-3, recalibrate=True, refine=None,
            refine_ridge=1.0, refine_sweeps=3):
    """Convert a trained network into a table (TabConv) network.

    Parameters
    ----------
    model : Network
        The trained network (batch norm folded here; the input is not changed).
    calibration_images : array (N, C, H, W)
        Training images (uint8, or floats in [0, 1]); normalised with
        ``model.normalize``.  Never test images.
    codebooks : int, str, list or dict
        ``C`` per layer: an int, or ``"D/<ds>"`` for ``ceil(D/ds)`` subspaces
        of about ``ds`` columns; a list gives one value per switch; a dict maps
        layer paths (``"layer1.0.conv2"``), switch names (``"layer1.0"``) or
        glob patterns over layer paths (``"*.downsample.*"``) to values, with
        ``"*"`` for the rest.
    prototypes : int, list or dict
        ``K`` per layer (2..16384), same forms.  Capped, with a note, when a
        layer has fewer distinct calibration rows.
    switches : list of 0/1, str "1,0,...", dict name -> 0/1, optional
        Which switches become tables (default all).
    mask_rate : float, optional
        Priority masking rate ``M`` in percent: keep exact the
        ``floor(M*L/100)`` switches (among those on) with the largest
        similarity drop.
    refit_classifier : bool
        Refit the final Linear by ridge regression of the exact logits on the
        table network's features (calibration images).
    seed : int
        Seeds k-means and subsampling; the result is a deterministic function
        of the inputs and the seed.
    progress : bool or None
        Progress bars (per layer, over its subspaces) on stderr; None: on a terminal only.
    calibrate : {"approx", "exact"}
        Learn each layer's prototypes from its input in the table network so
        far ("approx") or in the exact network ("exact").
    max_rows : int
        At most this many calibration rows per layer go to k-means (seeded subsample).
    iters : int
        Lloyd iterations per subspace.
    init : {"auto", "k-means++", "random", "product"}
        k-means seeding (see :class:`~tabconv_np.pq.ProductQuantizer`).
    ridge_alpha : float
        Relative ridge penalty of the classifier refit.
    recalibrate : bool
        After masking, convert the switches behind the first masked one again
        on the new activations (default); False keeps the all-table pass's tables.
    refine : {None, "exact", "local"}
        Beyond the authors' method: after building each table from its
        prototypes, refit the table entries by ridge-regularised least squares
        (:func:`tabconv_np.tables.fit_tables`) so that the layer's output on
        the calibration codes matches the exact network's output at that layer
        (``"exact"``: corrects the error accumulated before it) or the exact
        layer applied to the same input (``"local"``).  None: plain PQ tables.
    refine_ridge, refine_sweeps : float, int
        Shrinkage toward the prototype table (in rows) and coordinate-descent sweeps.

    Returns
    -------
    ConversionResult
    """
    t_start = time.perf_counter()
    if not isinstance(model, Network):
        raise ConfigError(f"convert: model must be a Network, got {type(model).__name__}")
    if refine not in (None, "exact", "local"):
        raise ConfigError(f"convert: refine must be None, 'exact' or 'local', got {refine!r}")
    if calibrate not in ("approx", "exact"):
        raise ConfigError(f"convert: calibrate must be 'approx' or 'exact', got {calibrate!r}")
    if mask_rate is not None and not 0 <= float(mask_rate) <= 100:
        raise ConfigError(f"convert: mask_rate must be in [0, 100] (percent), got {mask_rate!r}")
    if not isinstance(max_rows, (int, np.integer)) or max_rows < 2:
        raise ConfigError(f"convert: max_rows must be an int >= 2, got {max_rows!r}")
    imgs = np.asarray(calibration_images)
    if imgs.ndim == 3 and model.input_shape[0] == 1:
        imgs = imgs[:, None]
    if imgs.ndim != 4 or tuple(imgs.shape[1:]) != model.input_shape:
        raise ShapeError(f"convert: calibration images must be (N, {', '.join(map(str, model.input_shape))}),"
                         f" got {imgs.shape}")
    if len(imgs) < 2:
        raise ShapeError(f"convert: need at least 2 calibration images, got {len(imgs)}")

    exact = fold_batchnorm(model)
    sw = find_switches(exact.body)
    if not sw:
        raise ConfigError("convert: the network has no Conv2d or Linear layer to convert")
    on = _flags(switches, sw)
    c_spec = _per_switch(codebooks, sw, "codebooks", on)
    k_spec = _per_switch(prototypes, sw, "prototypes", on)
    for leaf, k in k_spec.items():
        if k is None:
            continue
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not K_MIN <= k <= K_MAX:
            raise ConfigError(f"prototypes for {leaf}: expected an int in [{K_MIN}, {K_MAX}], got {k!r}")
    settings = {leaf: (c_spec[leaf], k_spec[leaf]) for leaf in c_spec}
    refit_leaf = _last_linear(exact.body) if refit_classifier else None
    notes = []
    if refit_classifier and refit_leaf is None:
        notes.append("classifier refit skipped: the network does not end in a Linear layer")

    x = exact.normalize(imgs)
    if exact.layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    common = dict(layout=exact.layout, calibrate=calibrate, max_rows=int(max_rows), iters=iters,
                  init=init, seed=seed, progress=progress, refit_leaf=refit_leaf, alpha=ridge_alpha,
                  refine=refine, refine_ridge=refine_ridge, refine_sweeps=refine_sweeps)

    p1 = _Pass(sw, on, settings, reuse={}, reuse_before=0, notes=notes, **common)
    body, _, _ = p1.walk(exact.body, "", x, x)
    sims, drops, masked, final = p1.sims, None, [], p1
    if mask_rate is not None:
        masked, drops = priority_mask(sims, float(mask_rate), candidates=on)
        if masked:
            on = [f and i not in masked for i, f in enumerate(on)]
            reuse_before = min(masked) if recalibrate else len(sw)
            final = _Pass(sw, on, settings, reuse=p1.converted, reuse_before=reuse_before,
                          notes=notes, **common)
            body, _, _ = final.walk(exact.body, "", x, x)
    meta = dict(exact.meta)
    meta["tabconv"] = {
        "switches": [s.name for s in sw], "on": [int(f) for f in on],
        "masked": [sw[i].name for i in masked], "mask_rate": mask_rate,
        "layers": {r["name"]: [r["C"], r["K"]] for r in final.records},
        "calibration_images": int(len(imgs)), "calibrate": calibrate, "seed": seed,
        "refine": refine,
        "classifier_refit": bool(final.refit)}
    net = Network(body, exact.input_shape, exact.preprocess, exact.layout, meta)
    settings_out = {"codebooks": codebooks if not isinstance(codebooks, dict) else dict(codebooks),
                    "prototypes": prototypes if not isinstance(prototypes, dict) else dict(prototypes),
                    "mask_rate": mask_rate, "refit_classifier": refit_classifier, "seed": seed,
                    "calibrate": calibrate, "max_rows": int(max_rows), "iters": iters, "init": init,
                    "refine": refine, "refine_ridge": refine_ridge, "refine_sweeps": refine_sweeps,
                    "calibration_images": int(len(imgs))}
    res = ConversionResult(
        network=net, exact=exact, switches=[s.name for s in sw], on=on,
        masked=[sw[i].name for i in masked], similarities=sims, drops=drops,
        final_similarities=final.sims, layers=final.records, refit=final.refit, notes=notes,
        seconds=time.perf_counter() - t_start, settings=settings_out)
    res._unrefit = final.unrefit
    return res


def _forward_record(m, x, layout, path, want, out):
    """Forward ``x`` through ``m``, storing the output of every module whose path is in ``want``."""
    if isinstance(m, Sequential):
        for n, child in m.children.items():
            x = _forward_record(child, x, layout, _join(path, n), want, out)
        y = x
    else:
        y = _apply(m, x, layout)
    if path in want:
        out[path] = y
    return y


def switch_similarities(table_net, exact_net, images):
    """Cosine similarity of two networks' activations at every switch output, on ``images``.

    The criterion of priority masking, measured on any images (e.g. test
    images, to see how far the calibration similarities generalise).

    Parameters
    ----------
    table_net, exact_net : Network
        Same switch structure (a converted network and its exact origin).
    images : array (N, C, H, W)

    Returns
    -------
    dict
        ``{switch name: similarity}`` in forward order.
    """
    sw = [s.name for s in find_switches(exact_net.body)]
    res = []
    for net in (table_net, exact_net):
        x = net.normalize(np.asarray(images))
        if net.layout == "NHWC":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        rec = {}
        _forward_record(net.body, x, net.layout, "", set(sw), rec)
        res.append(rec)
    return {n: cosine_similarity(res[0][n], res[1][n]) for n in sw}


def table_structure(model, codebooks=8, prototypes=256, switches=None):
    """The table network ``convert`` would build, with zero parameters: for counting only.

    Same switches and ``(C, K)`` resolution as :func:`convert`, but no data:
    ``K`` is never capped.  Used to report the operation reduction of an
    architecture on a data set that is not available (e.g. CIFAR here).

    Returns
    -------
    Network
        BN folded; table layers' prototypes and tables are zeros.
    """
    exact = fold_batchnorm(model)
    sw = find_switches(exact.body)
    on = _flags(switches, sw)
    c_spec = _per_switch(codebooks, sw, "codebooks", on)
    k_spec = _per_switch(prototypes, sw, "prototypes", on)
    mods = dict(exact.body.modules())
    body = exact.body
    for s in sw:
        if not on[s.index]:
            continue
        for leaf in s.leaves:
            m = mods[leaf]
            if isinstance(m, Linear):
                C = _codebooks_for(c_spec[leaf], m.in_features, leaf)
                new = TableLinear(m.in_features, m.out_features, C, int(k_spec[leaf]), "bias" in m.params)
            else:
                D = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                C = _codebooks_for(c_spec[leaf], D, leaf)
                new = TableConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                  m.dilation, C, int(k_spec[leaf]), "bias" in m.params)
            body = _replace(body, leaf, new)
    return Network(body, exact.input_shape, exact.preprocess, exact.layout, dict(exact.meta))


def augment_images(images, flip=True):
    """Calibration images plus their horizontal mirror images (``flip``), as one array.

    Only for data whose training used flips (Fashion-MNIST here); the
    mirrored copies double the calibration rows every layer sees.
    """
    images = np.asarray(images)
    if not flip:
        return images
    return np.concatenate([images, images[..., ::-1]])


# -------------------------------------------------------- op accounting
CONVENTIONS = {
    "paper": ("table layers' lookups + lookup adds, plus the exact layers' MACs, against the "
              "exact network's MACs (conv + linear); encoding is not counted, as in the TabConv paper"),
    "full": ("every arithmetic operation (encoding distances and comparisons, lookup adds, MACs, "
             "bias adds, ReLU, pooling, residual adds) against the same for the BN-folded exact network"),
}


def op_reduction(table_net, exact_net, input_shape=None):
    """Operation and storage savings of a table network, under both named conventions.

    Parameters
    ----------
    table_net : Network
        A converted network.
    exact_net : Network
        The network it came from (BN folded or not: MACs are the same; for
        ``"full"`` pass the BN-folded one, as :class:`ConversionResult.exact` is).
    input_shape : tuple, optional
        ``(C, H, W)`` or ``(N, C, H, W)``; default the network's, batch 1.

    Returns
    -------
    dict
        ``{"paper": {...}, "full": {...}, "storage": {...}}``; each convention
        has ``reduction`` (fraction saved), ``cost``, ``exact``, ``ratio``
        (exact / cost) and ``convention`` (what is counted).  ``storage``:
        ``table_bytes`` (prototypes + tables + biases of the table layers),
        ``replaced_weight_bytes`` (weights + biases of the exact layers they
        replace), ``network_bytes`` and ``exact_network_bytes``.
    """
    from .ops import count_ops
    t = count_ops(table_net, input_shape)
    e = count_ops(exact_net, input_shape)
    paper_cost = sum(r["lookups"] + r["lookup_adds"] + r["macs"] for r in t.rows)
    out = {}
    for name, cost, base in (("paper", paper_cost, e.total["macs"]),
                             ("full", t.total["ops"], e.total["ops"])):
        out[name] = {"reduction": 1.0 - cost / base if base else 0.0, "cost": int(cost),
                     "exact": int(base), "ratio": base / cost if cost else float("inf"),
                     "convention": CONVENTIONS[name]}
    exact_rows = {r["name"]: r for r in e.rows}
    table_rows = [r for r in t.rows if r["lookups"]]
    replaced = sum(exact_rows[r["name"]]["storage_bytes"] for r in table_rows if r["name"] in exact_rows)
    out["storage"] = {"table_bytes": int(sum(r["storage_bytes"] for r in table_rows)),
                      "replaced_weight_bytes": int(replaced),
                      "network_bytes": int(t.total["storage_bytes"]),
                      "exact_network_bytes": int(e.total["storage_bytes"])}
    out["table_layers"] = len(table_rows)
    out["encode_macs"] = int(t.total["encode_macs"])
    return out
