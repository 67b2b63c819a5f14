"""``tabconv compare``: every conversion method side by side on one network, under one op counter.

The network is converted with every method of :data:`METHODS` at each of its
few settings (the method's *grid*), and every result is measured against the
exact network (BN folded, as a prepared plan) on the same images:

* **images**: calibration images and a validation split, both carved from the
  training images (:func:`split_images`); the validation split chooses (the
  per-layer search, the best single setting), the test images only report;
* **accuracy** on the test images, **retention** (accuracy / exact accuracy),
  **agreement** (share of test images given the exact network's class), and
  the validation accuracy;
* **operations** per image, in the method's own units (:data:`METHODS`) and in
  the ``full`` convention (every arithmetic operation, encoding included;
  :mod:`tabconv_np.ops`), and MACs;
* **storage**: bytes of every stored array (``storage_bytes``);
* **latency** at batch 1 and 32: both networks as prepared plans
  (:func:`tabconv_np.prepare`), interleaved samples
  (:func:`tabconv_np.timing.time_round_robin`), the median, as a ratio to the
  exact network timed in the same process right beside it;
* **conversion time** (seconds of :func:`~tabconv_np.conversion.convert`);
* **per switch** (what the per-layer search reads, :mod:`tabconv_np.budget`):
  the validation accuracy drop and cross-entropy increase of the exact network
  with that switch alone taken from the converted one (None where its layers
  fit only beside another switch's, as channel pruning across two switches
  of a chain leaves them), its ``full``
  operations, storage, and seconds at batch 1 (the network's own forward, each
  layer timed in place).

Every finished result is appended at once to a JSON-lines file (its first
line: the context, model file digest and data sizes); a run given the same
file skips the results it holds, so an interrupted run resumes.

JSON fields of a result (``tabconv compare --json``, ``results.json``):
``key``, ``method``, ``settings``, ``label``, ``accuracy``, ``val_accuracy``,
``retention``, ``agreement``, ``own_units`` (``{"name", "label", "value"}``),
``ops`` (``{"full", "macs", "full_ratio"}``: ratio = exact / this),
``storage_bytes``, ``storage_ratio``, ``latency`` (``{"b1", "b32"}``: time /
exact time; ``latency_ms``: this network's own medians), ``conversion_s``,
``switches`` (``{name: {"converted", "val_drop", "val_loss_increase", "full_ops",
"storage_bytes", "seconds"}}``).  The exact row has the same fields (ratios 1, no conversion).
"""
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

from .data import stratified_split
from .errors import ConfigError, DataError, ShapeError
from .fold import fold_batchnorm
from .network import Network
from .ops import CONVENTIONS, count_ops
from .plan import prepare
from .progress import Progress, say
from .structure import leaves, map_leaves
from .timing import time_round_robin
from .userdata import command_images


@dataclass(frozen=True)
class Entry:
    """A method of the comparison: how its own operations are counted, and its settings grid.

    Attributes
    ----------
    units : str
        A key of ``count_ops(net).total``: a quantity (``int8_macs``) or a convention (``paper``).
    units_label : str
    grid : tuple of dict
        ``convert()`` settings, one result each (2-3: the run converts the whole network each time).
    """

    units: str
    units_label: str
    grid: tuple


#: The methods of ``tabconv compare``, by their ``convert(method=...)`` name.  A new method is one
#: entry here (a method not registered in this build is left out of ``--methods all``).
METHODS = {
    "tabconv": Entry("paper", "lookups + lookup adds + exact MACs (TabConv paper)",
                     ({"prototypes": 16, "codebooks": 8}, {"prototypes": 64, "codebooks": 16})),
    "maddness": Entry("bolt", "MACs + encoding + lookups (Bolt/MADDNESS)",
                      ({"codebooks": "auto"}, {"codebooks": "D/18"})),
    "lowrank": Entry("macs", "MACs", ({"form": "svd", "energy": 0.9}, {"form": "tucker2", "energy": 0.9},
                                      {"form": "spatial", "energy": 0.8})),
    "int8": Entry("int8_macs", "int8 MACs", ({}, {"range_rule": "percentile", "percentile": 99.99})),
    "lcnn": Entry("macs", "MACs (every multiply, as the LCNN paper counts)",
                  ({"atoms": 32, "sparsity": 2}, {"atoms": 64, "sparsity": 3})),
    "rsdtr": Entry("macs", "MACs (tensor-ring contractions)",
                   ({"eps": 0.3, "convs": "blocks"}, {"eps": 0.5, "convs": "blocks"})),
    "prune": Entry("macs", "MACs of the kept weights", ({"pruned": 0.5}, {"pruned": 0.8})),
    "channels": Entry("macs", "MACs of the smaller convolutions", ({"keep": 0.5}, {"keep": 0.75})),
    "binary": Entry("adds", "float adds (weights +-alpha per filter: no multiplies)", ({}, {"refine": "exact"})),
    "ternary": Entry("adds", "float adds (weights 0, +-alpha per filter)", ({}, {"refine": "exact"})),
}
#: Batch sizes of the latency columns.
BATCHES = (1, 32)
#: Searches under a latency budget: when the plan's measured latency is over the budget, the search
#: is run again aiming lower (the per-switch times are an estimate), at most this many times in all.
LATENCY_TRIES = 3


def method_list(text, registered):
    """The method names of ``--methods``: ``all`` (every :data:`METHODS` entry registered) or a comma list.

    Raises
    ------
    ConfigError
        An unknown method, or none.
    """
    known = [m for m in METHODS if m in registered]
    if text in (None, "all"):
        return known
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"tabconv compare: unknown method(s) {bad or [text]}; known: all, {', '.join(known)}")
    return list(dict.fromkeys(names))


def result_key(method, settings):
    """The name of one result: the method and its settings, canonical (resume matches on it)."""
    return method + " " + json.dumps(settings, sort_keys=True)


def label(method, settings):
    """A result's name for people: ``prune pruned=0.8``."""
    return method + (" " + " ".join(f"{k}={v}" for k, v in settings.items()) if settings else " (defaults)")


# ------------------------------------------------------------------ images
@dataclass
class Split:
    """The images of a run: calibration and validation from training images, test images."""

    calib: np.ndarray
    val: np.ndarray
    val_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    sources: dict


def split_images(net, calib, val, seed=0, dataset=None, data=None, data_dir=None, test=None):
    """Calibration, validation and test images (see the module docstring).

    A named data set (or the one the model records): ``val`` validation images
    (stratified, ``ceil(val / classes)`` per class) and a seeded subset of
    ``calib`` calibration images from the rest of the training split; the test
    split (the first ``test`` images, default all) for the figures.  ``data`` (the
    user's one labelled file): a third of it (stratified) is the test set, the
    validation and calibration images come from the rest.

    Raises
    ------
    DataError
        Too few images for the split, no labels.
    """
    what = "tabconv compare"
    if data is not None:
        x, y, src = command_images(net, what, "train", data=data)
        rest, te = stratified_split(y, max(1, len(y) // (3 * len(np.unique(y)))), seed)
        xt, yt, xtr, ytr = x[te], y[te], x[rest], y[rest]
        sources = {"train": f"{src} (two thirds)", "test": f"{src} (a third, stratified)"}
    else:
        xtr, ytr, src = command_images(net, what, "train", dataset, None, data_dir)
        xt, yt, tsrc = command_images(net, what, "test", dataset, None, data_dir, limit=test)
        sources = {"train": src, "test": tsrc}
    classes = len(np.unique(ytr))
    rest, vi = stratified_split(ytr, -(-val // classes), seed)
    if len(rest) < 2 or len(vi) < 1 or len(xt) < 1:
        raise DataError(f"{what}: {sources['train']} holds {len(ytr)} training images; "
                        f"{val} validation images and at least 2 calibration images need more")
    ci = np.sort(np.random.default_rng(seed).choice(rest, min(calib, len(rest)), replace=False))
    sources.update(calib=len(ci), val=len(vi), test_images=len(xt))
    return Split(xtr[ci], xtr[vi], ytr[vi], xt, yt, sources)


# ------------------------------------------------------------------ measuring
def _under(name, switch):
    return name == switch or name.startswith(switch + ".")


def switch_figures(net, switches):
    """``{switch: {"full_ops", "storage_bytes"}}`` of ``net`` (per image, ``full`` convention)."""
    rows = count_ops(net).rows
    full = CONVENTIONS["full"].cost
    return {s: {"full_ops": int(sum(full(r) for r in rows if _under(r["name"], s))),
                "storage_bytes": int(sum(r["storage_bytes"] for r in rows if _under(r["name"], s)))}
            for s in switches}


def switch_seconds(net, image, switches, repeats=5):
    """``{switch: seconds}``: median time of each switch's layers in ``net``'s own forward of one image.

    Every leaf layer is timed in place (its ``forward`` wrapped) over ``repeats`` forwards of
    ``image`` (1, C, H, W); a switch's time is the sum of its layers' medians.
    """
    paths = leaves(net.body)
    times = {p: [] for p, _ in paths}
    for p, m in paths:
        def timed(x, layout, p=p, forward=m.forward):
            t0 = time.perf_counter()
            y = forward(x, layout)
            times[p].append(time.perf_counter() - t0)
            return y
        m.forward = timed
    try:
        for _ in range(repeats + 1):
            net.predict(image)
    finally:
        for _, m in paths:
            del m.forward
    med = {p: float(np.median(t[1:])) for p, t in times.items()}
    return {s: sum(v for p, v in med.items() if _under(p, s)) for s in switches}


def splice(exact, modules, switch):
    """``exact`` with the layers of ``switch`` (a :class:`~tabconv_np.conversion.Switch`) taken from
    ``modules`` (``{path: module}`` of a converted network): what that switch alone costs in accuracy."""
    body = map_leaves(exact.body, lambda p, leaf: modules.get(p, leaf) if p in switch.leaves else leaf)
    return Network(body, exact.input_shape, exact.preprocess, exact.layout, exact.meta)


def converted_switches(exact, net, switches):
    """Per switch, whether ``net`` replaced any of its layers by another type or shape (a method may
    keep some exact; channel pruning leaves smaller layers of the same type; a refit classifier is
    the same layer)."""
    a, b = dict(exact.body.modules()), dict(net.body.modules())

    def shapes(m):
        return type(m), {k: np.shape(v) for k, v in getattr(m, "params", {}).items()}
    return [any(shapes(b.get(p)) != shapes(a[p]) for p in sw.leaves) for sw in switches]


def scores(net, images, labels):
    """``(accuracy, predicted classes, mean cross-entropy)`` of ``net`` on labelled ``images``."""
    logits = net.predict(images).astype(np.float64)
    top = logits.max(1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    pred = logits.argmax(1)
    return float(np.mean(pred == labels)), pred, float(-logp[np.arange(len(labels)), labels].mean())


def latency(exact_plan, plan, images, repeats, batches=BATCHES):
    """``({batch: ratio}, {batch: ms})``: medians of interleaved samples of ``plan`` and ``exact_plan``
    on ``images`` (normalised floats, NCHW), as a ratio to the exact network, and ``plan``'s in ms."""
    ratio, ms = {}, {}
    for b in batches:
        x = np.ascontiguousarray(np.resize(images, (b,) + images.shape[1:]))
        t = time_round_robin({"exact": lambda: exact_plan.run(x), "this": lambda: plan.run(x)},
                             repeats, warmup=1, min_sample=0.02, pause=0.0)
        ratio[f"b{b}"] = t["this"]["median"] / t["exact"]["median"]
        ms[f"b{b}"] = 1e3 * t["this"]["median"]
    return ratio, ms


class Context:
    """The exact network and the images of a run, measured once; :meth:`measure` measures a result."""

    def __init__(self, net, split, repeats=5, seed=0):
        from .conversion import find_switches
        self.exact, self.split, self.repeats, self.seed = fold_batchnorm(net), split, repeats, seed
        self.switches = find_switches(self.exact.body)
        self.names = [s.name for s in self.switches]
        self.plan = prepare(self.exact)
        self.x_time = self.exact.normalize(split.test[:max(BATCHES)])
        self.counts = count_ops(self.exact).total
        self.val_acc, _, self.val_loss = scores(self.exact, split.val, split.val_labels)
        self.test_acc, self.test_pred, _ = scores(self.exact, split.test, split.test_labels)
        self.row = self.measure(self.exact, "exact", {}, 0.0)

    def measure(self, net, method, settings, seconds, parts=None):
        """The result row of network ``net`` (see the module docstring for the fields).

        ``parts``: ``{path: layer}`` of the converted layers, to measure each converted switch's
        validation accuracy drop alone (the search needs it; a plan's row does not).
        """
        s = self.split
        val_acc, _, _ = scores(net, s.val, s.val_labels)
        acc, pred, _ = scores(net, s.test, s.test_labels)
        t = count_ops(net).total
        units = METHODS[method].units if method in METHODS else "macs"
        ratio, ms = latency(self.plan, self.plan if net is self.exact else prepare(net), self.x_time, self.repeats)
        if net is self.exact:
            ratio = dict.fromkeys(ratio, 1.0)
        figs = switch_figures(net, self.names)
        secs = switch_seconds(net, s.test[:1], self.names, self.repeats)
        per = {}
        for sw, f in zip(self.switches, converted_switches(self.exact, net, self.switches)):
            drop = loss = None
            if f and parts is not None:
                try:
                    a, _, c = scores(splice(self.exact, parts, sw), s.val, s.val_labels)
                    drop, loss = self.val_acc - a, c - self.val_loss
                except ShapeError:       # its layers fit only beside another switch's (channel pruning
                    pass                 # across two switches of a chain): not an option on its own
            per[sw.name] = {"converted": bool(f), "val_drop": drop, "val_loss_increase": loss, **figs[sw.name],
                            "seconds": secs[sw.name]}
        row = {"key": result_key(method, settings), "method": method, "settings": settings,
               "label": "exact (float32)" if method == "exact" else label(method, settings),
               "accuracy": acc, "val_accuracy": val_acc, "retention": acc / self.test_acc if self.test_acc else None,
               "agreement": float(np.mean(pred == self.test_pred)),
               "own_units": {"name": units, "label": METHODS[method].units_label if method in METHODS else "MACs",
                             "value": int(t[units])},
               "ops": {"full": int(t["full"]), "macs": int(t["macs"]),
                       "full_ratio": self.counts["full"] / t["full"] if t["full"] else None},
               "storage_bytes": int(t["storage_bytes"]),
               "storage_ratio": self.counts["storage_bytes"] / t["storage_bytes"] if t["storage_bytes"] else None,
               "latency": ratio, "latency_ms": ms, "conversion_s": seconds, "switches": per}
        return row

    def convert(self, method, settings):
        """The row of ``method`` at ``settings`` (the network converted on the calibration images)."""
        from .conversion import convert
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")             # setting notes: the row's figures say what happened
            res = convert(self.exact, self.split.calib, method=method, seed=self.seed, progress=False, **settings)
        seconds = time.perf_counter() - t0
        parts = dict(res.network.body.modules())
        if res.refit and res.unrefit is not None:       # the classifier alone: before its refit
            parts[res.refit["layer"]] = res.unrefit
        return self.measure(res.network, method, settings, seconds, parts)


# ------------------------------------------------------------------ runs and resuming
def file_digest(path):
    """The first 16 hex digits of the SHA-256 of the file at ``path`` (a results file's context)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class Results:
    """The JSON-lines file of a run: a context line, then one finished result per line.

    A file written for another context (model, data, sizes, seed) is refused, not mixed in.
    """

    def __init__(self, path, context, fresh=False):
        self.path, self.context, self.rows = path, context, {}
        if path and os.path.exists(path) and not fresh:
            lines = self._read(path)
            if not lines or lines[0].get("context") != context:
                raise ConfigError(f"{path}: written by another compare run (model, data or sizes differ: "
                                  f"{lines[0].get('context') if lines else 'empty'}); give another "
                                  f"--results file or --fresh to start over")
            self.rows = {r["key"]: r for r in lines[1:]}
        elif path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"context": context}) + "\n")

    @staticmethod
    def _read(path):
        """The file's JSON lines; a last line cut short (a run killed while writing) is dropped from the file."""
        with open(path, encoding="utf-8") as f:
            text = [line for line in f if line.strip()]
        out = []
        for line in text:
            try:
                out.append(json.loads(line))
            except ValueError:
                break
        if len(out) < len(text):
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(v) + "\n" for v in out)
        return out

    def add(self, row):
        self.rows[row["key"]] = row
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())


def one_line(row):
    """A result as one line of text (what a run prints off a terminal)."""
    lat = row["latency"]
    return (f"{row['label']}: accuracy {row['accuracy']:.2%} (val {row['val_accuracy']:.2%}), "
            f"full ops x{row['ops']['full_ratio']:.2f} fewer, storage x{row['storage_ratio']:.2f} smaller, "
            f"time b1 {lat['b1']:.2f} / b32 {lat['b32']:.2f} of exact, converted in {row['conversion_s']:.1f} s")


def run_grid(ctx, methods, results, stream=None):
    """Every setting of ``methods`` (names of :data:`METHODS`), skipping those ``results`` holds.

    A bar on a terminal, a line per finished result otherwise.  A setting the method refuses on this
    network or these images (a :class:`~tabconv_np.errors.ConfigError`, e.g. int8 with fewer
    calibration images than it needs) is said and left out, not stored: the others go on.

    Returns
    -------
    rows : list of dict
        The results, in grid order.
    refused : list of dict
        ``{"key", "label", "error"}`` of the settings refused.
    """
    stream = stream or sys.stderr
    todo = [(m, s) for m in methods for s in METHODS[m].grid]
    tty = stream.isatty() if hasattr(stream, "isatty") else False
    rows, refused = [], []
    with Progress(len(todo), "tabconv compare", enabled=tty, stream=stream) as bar:
        for m, s in todo:
            key = result_key(m, s)
            if key in results.rows:
                rows.append(results.rows[key])
                bar.update(1, f"{label(m, s)} (from {results.path})")
                continue
            try:
                row = ctx.convert(m, s)
            except ConfigError as e:
                refused.append({"key": key, "label": label(m, s), "error": str(e)})
                bar.update(1, f"{label(m, s)}: refused")
                say(f"{label(m, s)}: refused: {e}", stream=stream)
                continue
            results.add(row)
            rows.append(row)
            bar.update(1, label(m, s))
            if not tty:
                say(one_line(row), stream=stream)
    return rows, refused


def plan_of(choice, rows, notes=""):
    """The plan (:mod:`tabconv_np.conversion.mixed`) of a search's ``{switch: result key or None}``."""
    from .conversion.mixed import EXACT, make_plan
    by_key = {r["key"]: r for r in rows}
    return make_plan({s: EXACT if k is None else (by_key[k]["method"], by_key[k]["settings"])
                      for s, k in choice.items()}, notes)


def budget_search(ctx, rows, budget):
    """The per-layer search under ``budget`` (:mod:`tabconv_np.budget`), its plan converted and measured.

    Returns
    -------
    dict
        The search's record (:func:`tabconv_np.budget.search`) and ``plan`` (the plan dict), ``row``
        (the plan's result row, ``method`` "plan"), ``meets_budget`` (measured), ``vs_best_single``
        (``{"key", "accuracy_diff", "val_accuracy_diff"}``: the plan's accuracy minus the best single
        setting's under the same budget, test and validation; None when no single setting meets it).
    """
    from .budget import figure, search
    from .conversion.mixed import convert_plan
    tighten = 1.0
    for attempt in range(LATENCY_TRIES if budget.kind == "latency" else 1):
        found = search(rows, ctx.row, budget, tighten)
        plan = plan_of(found["choice"], rows, f"tabconv compare --budget {budget.text}: greedy per-switch search "
                       f"on {ctx.split.sources['val']} validation images ({ctx.split.sources['train']})")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")             # said (and ignored) when the grid was converted
            net, _ = convert_plan(ctx.exact, ctx.split.calib, plan, seed=ctx.seed, progress=False)
        row = ctx.measure(net, "plan", {"budget": budget.text}, time.perf_counter() - t0)
        measured, limit = figure(row, budget.kind, ctx.row), found["budget"]["limit"]
        if measured <= limit:
            break
        tighten *= limit / measured                  # the estimate was optimistic: aim lower
    row["label"] = f"plan (budget {budget.text})"
    best = {r["key"]: r for r in rows}.get(found["best_single"])
    return dict(found, plan=plan, row=row, attempts=attempt + 1, meets_budget=bool(measured <= limit),
                vs_best_single=None if best is None else {
                    "key": best["key"], "label": best["label"], "accuracy_diff": row["accuracy"] - best["accuracy"],
                    "val_accuracy_diff": row["val_accuracy"] - best["val_accuracy"]})
