"""Per-switch plans: a different method, with its own settings, in each switch of one network.

A plan says, for every switch (:mod:`~tabconv_np.conversion.switches`), which
method converts it and with which settings, or that it stays exact.  It is a
JSON object (``tabconv compare --budget`` writes one, ``tabconv convert --plan
PLAN.json`` applies it)::

    {"format": "tabconv-plan", "version": 1,
     "switches": {"conv1": "exact",
                  "layer1.0": {"method": "int8", "settings": {}},
                  "layer2.0": {"method": "prune", "settings": {"pruned": 0.8}},
                  ...},
     "notes": "..."}

Switches the plan does not name stay exact.  :func:`convert` converts a
network with one method, so a plan is applied as one :func:`convert` per
*group* (the switches that share a method and its settings), in forward
order of each group's first switch, each with ``switches=`` turning on that
group only, on the network the groups before it produced.  Each group is
therefore calibrated (``calibrate="approx"``) on what the groups before it
produce, but not on what the groups after it will change.  The classifier
refit is done once, at the end, against the exact network's logits (when the
last layer is still a Linear), rather than once per group against a
partly converted network.  Every group's settings are checked (a data-free
:func:`~tabconv_np.conversion.pipeline.skeleton`) before any fitting starts.
"""
import json
import time

import numpy as np

from ..errors import ConfigError
from ..fold import fold_batchnorm
from ..structure import map_leaves
from .method import METHODS
from .pipeline import convert, skeleton
from .refit import last_linear, refit_linear
from .switches import find_switches

FORMAT, VERSION = "tabconv-plan", 1
EXACT = "exact"


def make_plan(choices, notes=""):
    """A plan from ``{switch name: (method, settings dict) or "exact"}``."""
    sw = {name: (EXACT if c == EXACT else {"method": c[0], "settings": dict(c[1])}) for name, c in choices.items()}
    return {"format": FORMAT, "version": VERSION, "switches": sw, "notes": notes}


def check_plan(plan, where="plan"):
    """``{switch name: (method, settings) or "exact"}`` of a plan dict, refusing a malformed one.

    Raises
    ------
    ConfigError
        Not a plan, another version, an unknown method, settings that are not an object.
    """
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a tabconv plan (expected a JSON object with \"format\": \"{FORMAT}\")")
    if plan.get("version") != VERSION:
        raise ConfigError(f"{where}: plan version {plan.get('version')!r}; this tabconv_np reads version {VERSION}")
    sw = plan.get("switches")
    if not isinstance(sw, dict):
        raise ConfigError(f"{where}: \"switches\" must be an object {{switch name: \"exact\" or "
                          f"{{\"method\": ..., \"settings\": {{...}}}}}}")
    out = {}
    for name, c in sw.items():
        if c == EXACT:
            out[name] = EXACT
            continue
        if not isinstance(c, dict) or c.get("method") not in METHODS or not isinstance(c.get("settings", {}), dict):
            raise ConfigError(f"{where}: switch {name}: expected \"exact\" or {{\"method\": one of "
                              f"{sorted(METHODS)}, \"settings\": {{...}}}}, got {json.dumps(c)}")
        out[name] = (c["method"], dict(c.get("settings", {})))
    return out


def read_plan(path):
    """The plan dict in the JSON file ``path`` (checked by :func:`check_plan`)."""
    try:
        with open(path, encoding="utf-8") as f:
            plan = json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the plan ({e.strerror or e})") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON ({e})") from None
    check_plan(plan, path)
    return plan


def groups(plan, switch_names):
    """``[(method, settings, [switch names])]``: the plan's converted switches grouped by method and
    settings, in forward order of each group's first switch (``switch_names``: the network's, in order)."""
    choices = check_plan(plan)
    unknown = sorted(set(choices) - set(switch_names))
    if unknown:
        raise ConfigError(f"plan: unknown switch(es) {unknown}; the network's switches are {list(switch_names)}")
    out = {}
    for name in switch_names:
        c = choices.get(name, EXACT)
        if c != EXACT:
            key = (c[0], json.dumps(c[1], sort_keys=True))
            out.setdefault(key, (c[0], c[1], []))[2].append(name)
    return list(out.values())


def convert_plan(model, calibration_images, plan, seed=0, calibrate="approx", max_rows=50_000,
                 refit_classifier=True, ridge_alpha=1e-3, progress=None):
    """Convert ``model`` switch by switch as ``plan`` says (see the module docstring).

    Parameters
    ----------
    model : Network
    calibration_images : array (N, C, H, W)
        Training images, never test images.
    plan : dict
        A plan (:func:`make_plan`, :func:`read_plan`).
    seed, calibrate, max_rows, progress
        As for :func:`~tabconv_np.conversion.pipeline.convert`, for every group.
    refit_classifier, ridge_alpha
        The final Linear refit by ridge regression of the exact logits on the converted
        features (kept only if it lowers their squared error), once after all groups.

    Returns
    -------
    network : Network
        BN folded; ``network.meta["plan"]`` holds the plan, ``meta["plan_groups"]`` the groups.
    record : dict
        ``groups`` (method, settings, switches, seconds), ``seconds``, ``refit`` (None or the layer).

    Raises
    ------
    ConfigError
        A malformed plan, an unknown switch, settings a method refuses: before any fitting.
    """
    t0 = time.perf_counter()
    exact = fold_batchnorm(model)
    names = [s.name for s in find_switches(exact.body)]
    todo = groups(plan, names)
    common = dict(seed=seed, calibrate=calibrate, max_rows=max_rows, progress=progress)
    for method, settings, members in todo:                  # every check before any fitting
        skeleton(exact, method, switches={n: int(n in members) for n in names}, **settings)
    net, record = exact, {"groups": []}
    for method, settings, members in todo:
        current = [s.name for s in find_switches(net.body)]
        t1 = time.perf_counter()
        res = convert(net, calibration_images, method=method, refit_classifier=False,
                      switches={n: int(n in members) for n in current}, **common, **settings)
        net = res.network
        record["groups"].append({"method": method, "settings": settings, "switches": members,
                                 "seconds": time.perf_counter() - t1})
    record["refit"] = _refit(net, exact, calibration_images, ridge_alpha) if refit_classifier and todo else None
    net.meta["plan"] = plan
    net.meta["plan_groups"] = record["groups"]
    record["seconds"] = time.perf_counter() - t0
    return net, record


def _refit(net, exact, images, alpha):
    """Refit ``net``'s final Linear (in place) to ``exact``'s logits on ``images``; its path, or None
    when the network does not end in a Linear that the plan kept, or the refit would not lower the
    squared error."""
    modules = dict(net.body.modules())
    path = last_linear(find_switches(exact.body), dict(exact.body.modules()))
    if path is None or type(modules.get(path)) is not type(dict(exact.body.modules())[path]):
        return None
    fc, seen = modules[path], []

    def record(x, layout, forward=fc.forward):      # what the classifier receives
        seen.append(np.array(x))
        return forward(x, layout)
    fc.forward = record
    try:
        net.predict(images)
    finally:
        del fc.forward
    feats, target = np.concatenate(seen), exact.predict(images)
    new, _ = refit_linear(fc, feats, target, alpha)
    before = float(np.mean((fc.forward(feats, "NCHW") - target) ** 2))
    after = float(np.mean((new.forward(feats, "NCHW") - target) ** 2))
    if after >= before:
        return None
    net.body = map_leaves(net.body, lambda p, leaf: new if p == path else leaf)
    return path
