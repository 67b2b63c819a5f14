"""What :func:`~tabconv_np.conversion.convert` returns."""
import copy
import time
from dataclasses import dataclass, field

import numpy as np

from ..blocks import Sequential
from ..errors import DataError
from ..network import Network


def replace_module(body, path, new):
    """A shallow copy of ``body`` with the module at dotted ``path`` replaced by ``new``."""
    head, _, rest = path.partition(".")
    clone = copy.copy(body)
    clone.children = type(body.children)(body.children)
    clone.children[head] = new if not rest else replace_module(body.children[head], rest, new)
    return clone


@dataclass
class ConversionResult:
    """A converted network and the record of its conversion.

    Attributes
    ----------
    network : Network
        The converted network (BN folded; switches that are off stay exact).
    exact : Network
        The BN-folded exact network it was converted from.
    method : Method
        The conversion method.
    switches : list of str
        Switch names in forward order.
    on : list of bool
        Final state of each switch (True: converted).
    masked : list of str
        Switches kept exact by priority masking.
    similarities : list of float
        Per switch, cosine similarity of the all-converted network and the
        exact network at the switch's output on the calibration images (the
        masking criterion).
    drops : list of float or None
        The similarity drops derived from them (when masking ran).
    final_similarities : list of float
        The same for the returned network.
    layers : list of dict
        Per converted layer: ``name, switch, rows, rel_error`` (relative L2
        error of the new layer against the exact layer on the same input, the
        first ``REL_ERROR_IMAGES`` calibration images: optimistic, they are
        training rows), ``seconds``, and the method's own fields (TabConv:
        ``D, C, K, K_requested, Ds, rows_used, calibrate, refine``).
    refit : dict or None
        Classifier refit: ``layer, alpha, lambda, mse_before, mse_after``
        (calibration MSE to the exact logits).
    notes : list of str
        Things the user should know (subsampling, capped K, skipped steps).
    seconds : float
    settings : dict
        The settings as given.
    """

    network: Network
    exact: Network
    method: object
    switches: list
    on: list
    masked: list
    similarities: list
    drops: object
    final_similarities: list
    layers: list
    refit: object
    notes: list
    seconds: float
    settings: dict
    unrefit: object = field(default=None, repr=False)

    def __repr__(self):
        n_on = sum(bool(v) for v in self.on)
        refit = f", classifier refit on {self.refit['layer']}" if self.refit else ""
        return (f"ConversionResult(method={self.method.name!r}, {n_on}/{len(self.on)} switches converted, "
                f"masked={self.masked}, layers={len(self.layers)}{refit}, {self.seconds:.1f} s)")

    def network_without_refit(self):
        """The converted network with the classifier as it was before the refit (shares modules)."""
        if not self.refit or self.unrefit is None:
            return self.network
        body = replace_module(self.network.body, self.refit["layer"], self.unrefit)
        return Network(body, self.network.input_shape, self.network.preprocess,
                       self.network.layout, dict(self.network.meta, classifier_refit=False))

    def accuracies(self, images, labels, batch=250):
        """Top-1 accuracy of the converted network with and without the classifier refit.

        When the refit layer is the last child of the body (ResNet, LeNet),
        the features before it are computed once for both.

        Returns
        -------
        dict
            ``{"table": acc, "without_refit": acc or None, "seconds": s,
            "predictions": int array (N,)}`` (``seconds``: the converted
            network's forward passes; ``predictions``: its predicted classes).

        Raises
        ------
        DataError
            No images.
        """
        images, labels = np.asarray(images), np.asarray(labels)
        if len(images) == 0:
            raise DataError("accuracies: no images (an accuracy of 0 images is undefined)")
        if images.ndim == 3 and self.network.input_shape[0] == 1:
            images = images[:, None]
        net = self.network
        t0 = time.perf_counter()
        body = net.body
        last = list(body.children)[-1] if isinstance(body, Sequential) and body.children else None
        if not self.refit or self.refit["layer"] != last or self.unrefit is None:
            pred = net.predict(images, batch).argmax(1)
            dt = time.perf_counter() - t0
            other = (float(np.mean(self.network_without_refit().predict(images, batch).argmax(1) == labels))
                     if self.refit and self.unrefit is not None else None)
            return {"table": float(np.mean(pred == labels)), "without_refit": other, "seconds": dt,
                    "predictions": pred}
        head = Sequential(list(body.children.items())[:-1])
        fc = body.children[last]
        feats = Network(head, net.input_shape, net.preprocess, net.layout).predict(images, batch)
        y1 = fc.forward(feats, net.layout)
        dt = time.perf_counter() - t0
        y0 = self.unrefit.forward(feats, net.layout)
        return {"table": float(np.mean(y1.argmax(1) == labels)),
                "without_refit": float(np.mean(y0.argmax(1) == labels)), "seconds": dt,
                "predictions": y1.argmax(1)}

    def to_dict(self):
        keys = ("switches", "on", "masked", "similarities", "drops", "final_similarities",
                "layers", "refit", "notes", "seconds", "settings")
        d = {k: getattr(self, k) for k in keys}
        d["method"] = self.method.name
        return d

    def summary(self):
        """A few lines per switch: state, similarity, settings and error of its layers."""
        lines = [f"{'switch':<12} {'state':<6} {'sim(all-table)':>14} {'drop':>8} {'sim(final)':>10}  "
                 f"layers ({self.method.label}, rel.err)"]
        by_switch = {}
        for r in self.layers:
            by_switch.setdefault(r["switch"], []).append(r)
        for i, name in enumerate(self.switches):
            sim = f"{self.similarities[i]:.4f}" if self.similarities else "-"
            drop = f"{self.drops[i]:.4f}" if self.drops else "-"
            fin = f"{self.final_similarities[i]:.4f}" if self.final_similarities else "-"
            state = "table" if self.on[i] else ("masked" if name in self.masked else "exact")
            ls = ", ".join(f"{r['name'].removeprefix(name + '.')}({self.method.describe(r)},{r['rel_error']:.3f})"
                           for r in by_switch.get(name, []))
            lines.append(f"{name:<12} {state:<6} {sim:>14} {drop:>8} {fin:>10}  {ls}")
        if self.refit:
            r = self.refit
            lines.append(f"classifier refit ({r['layer']}): calibration MSE to exact logits "
                         f"{r['mse_before']:.4g} -> {r['mse_after']:.4g}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
