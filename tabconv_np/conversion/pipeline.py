"""``convert``: a trained network to a converted one, with any registered method; ``skeleton``.

``convert(net, calibration_images, method="tabconv", **settings)`` does, in order:

1. fold every batch norm into the conv before it (``fold_batchnorm``: exact);
2. find the switches (:mod:`~tabconv_np.conversion.switches`) and resolve
   every per-layer setting of the method for the layers of the switches that
   are on; a structure the walk cannot read, a layer the method cannot
   convert or a bad setting is refused here, before any fitting;
3. walk the network layer by layer on the calibration images (training
   images, never test images), carrying the exact and the converted
   activations (:mod:`~tabconv_np.conversion.walk`); each layer of a switch
   that is on is fitted by the method on what the converted layers before it
   produce (``calibrate="approx"``, the default) or on the exact activations
   (``calibrate="exact"``);
4. optionally refit the final Linear in closed form (ridge regression of the
   exact network's logits on the converted network's features);
5. optionally priority masking (``mask_rate=M``, :mod:`~tabconv_np.conversion.masking`);
   the switches after the first masked one are then converted again on the
   new activations.

:func:`tabconv_np.ops.op_reduction` reports what the conversion saves, always
naming the counting convention.
"""
import time
import warnings

import numpy as np

from ..errors import ConfigError, SettingWarning, ShapeError
from ..fold import fold_batchnorm
from ..network import Network
from ..structure import map_leaves
from .masking import masking_warning, priority_mask
from .method import get_method
from .refit import last_linear
from .result import ConversionResult
from .settings import gather_warnings, per_layer, split_settings, switch_flags
from .switches import find_switches
from .walk import Pass


def _plan(method, exact, common, method_settings):
    """``(switches, on, {leaf path: resolved settings}, warnings)`` with every check done up front.

    ``warnings``: one line per kind of setting that does not do what it says
    (clamped, padding only, a masking rate that masks nothing), each also
    issued as a :class:`~tabconv_np.errors.SettingWarning`.
    """
    body = exact.body
    sw = find_switches(body)
    if not sw:
        raise ConfigError("convert: the network has no Conv2d or Linear layer to convert")
    on = switch_flags(common.switches, sw)
    specs = {f: per_layer(getattr(method_settings, f), sw, f.removeprefix("n_"), on)
             for f in method.per_layer}
    modules = dict(body.modules())
    resolved = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in sw:
            if not on[s.index]:
                continue
            for leaf in s.leaves:
                resolved[leaf] = method.resolve(leaf, modules[leaf], {f: specs[f][leaf] for f in specs},
                                                method_settings)
        resolved = method.resolve_network(resolved, exact, method_settings)
    said = gather_warnings(caught)
    mask = masking_warning(common.mask_rate, len(sw))
    said += [mask] if mask else []
    for text in said:
        warnings.warn(SettingWarning(text), stacklevel=3)
    return sw, on, resolved, said


def _images(model, calibration_images):
    imgs = np.asarray(calibration_images)
    if imgs.ndim == 3 and model.input_shape[0] == 1:
        imgs = imgs[:, None]
    if imgs.ndim != 4 or tuple(imgs.shape[1:]) != model.input_shape:
        raise ShapeError(f"convert: calibration images must be (N, {', '.join(map(str, model.input_shape))}),"
                         f" got {imgs.shape}")
    if len(imgs) < 2:
        raise ShapeError(f"convert: need at least 2 calibration images, got {len(imgs)}")
    model.check_range(imgs, "convert: calibration images")
    return imgs


def convert(model, calibration_images, method="tabconv", **settings):
    """Convert a trained network with a conversion method (default: TabConv tables).

    Parameters
    ----------
    model : Network
        The trained network (batch norm folded here; the input is not changed).
    calibration_images : array (N, C, H, W)
        Training images (uint8 0-255, or floats in the model's input range,
        default [0, 1]); normalised with ``model.normalize``.  Never test images.
    method : str or Method
        A registered method name (``"tabconv"``) or a
        :class:`~tabconv_np.conversion.method.Method` instance.
    **settings
        The method-independent settings of
        :class:`~tabconv_np.conversion.settings.ConversionSettings`
        (``switches, mask_rate, refit_classifier, ridge_alpha, calibrate,
        max_rows, recalibrate, seed, progress``) and the method's own (for
        TabConv, :class:`~tabconv_np.conversion.tabconv.TabConvSettings`:
        ``n_codebooks`` (alias ``codebooks``), ``n_prototypes`` (alias
        ``prototypes``), ``iters, init, refine, refine_ridge, refine_sweeps``).

    Returns
    -------
    ConversionResult

    Raises
    ------
    ConfigError
        Unknown setting or method, bad value, a layer or structure the method
        cannot convert: all before any fitting starts.
    ShapeError
        Calibration images of the wrong shape, or floats outside the model's
        input range (see :mod:`tabconv_np.network`).
    """
    t_start = time.perf_counter()
    if not isinstance(model, Network):
        raise ConfigError(f"convert: model must be a Network, got {type(model).__name__}")
    m = get_method(method)
    common, own = split_settings(settings, m.Settings, m.aliases)
    imgs = _images(model, calibration_images)
    exact = fold_batchnorm(model)
    own = m.for_network(own, exact.body)
    sw, on, resolved, notes = _plan(m, exact, common, own)
    modules = dict(exact.body.modules())
    refit_leaf = last_linear(sw, modules) if common.refit_classifier else None
    if common.refit_classifier and refit_leaf is None:
        notes.append("classifier refit skipped: the network does not end in a Linear layer")

    x = exact.normalize(imgs)
    if exact.layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    p1 = Pass(m, sw, on, resolved, common, own, refit_leaf, reuse={}, reuse_before=0, notes=notes)
    body, _, _ = p1.run(exact.body, x, exact.layout, "fitting layers")
    sims, drops, masked, final = p1.sims, None, [], p1
    if common.mask_rate is not None:
        masked, drops = priority_mask(sims, float(common.mask_rate), candidates=on)
        if masked:
            on = [f and i not in masked for i, f in enumerate(on)]
            reuse_before = min(masked) if common.recalibrate else len(sw)
            final = Pass(m, sw, on, resolved, common, own, refit_leaf, reuse=p1.converted,
                         reuse_before=reuse_before, notes=notes)
            body, _, _ = final.run(exact.body, x, exact.layout, "fitting again after masking")
    body = m.finish(body, resolved, final.records, own)
    given = {k: (dict(v) if isinstance(v, dict) else v) for k, v in settings.items() if k != "progress"}
    meta = dict(exact.meta)
    meta[m.name] = {
        "switches": [s.name for s in sw], "on": [int(f) for f in on],
        "masked": [sw[i].name for i in masked], "mask_rate": common.mask_rate,
        "layers": {r["name"]: m.layer_meta(r) for r in final.records},
        "calibration_images": int(len(imgs)), "calibrate": common.calibrate, "seed": common.seed,
        **m.network_meta(own),
        "classifier_refit": bool(final.refit)}
    net = Network(body, exact.input_shape, exact.preprocess, exact.layout, meta)
    return ConversionResult(
        network=net, exact=exact, method=m, switches=[s.name for s in sw], on=on,
        masked=[sw[i].name for i in masked], similarities=sims, drops=drops,
        final_similarities=final.sims, layers=final.records, refit=final.refit, notes=notes,
        seconds=time.perf_counter() - t_start,
        settings=dict(given, calibration_images=int(len(imgs))), unrefit=final.unrefit)


def skeleton(model, method="tabconv", **settings):
    """The network ``convert`` would build, with zero parameters: for counting only.

    Same switches and per-layer resolution as :func:`convert`, but no data
    (TabConv's ``K`` is never capped).  Reports the operation reduction of an
    architecture on a data set that is not available (e.g. CIFAR here).

    Returns
    -------
    Network
        BN folded; the new layers' parameters are zeros.
    """
    m = get_method(method)
    common, own = split_settings(settings, m.Settings, m.aliases)
    exact = fold_batchnorm(model)
    own = m.for_network(own, exact.body)
    _, _, resolved, _ = _plan(m, exact, common, own)
    body = map_leaves(exact.body, lambda path, leaf: (m.skeleton(leaf, resolved[path], own)
                                                      if path in resolved else leaf))
    body = m.finish(body, resolved, None, own)
    return Network(body, exact.input_shape, exact.preprocess, exact.layout, dict(exact.meta))


def table_structure(model, codebooks=8, prototypes=256, switches=None):
    """:func:`skeleton` of the TabConv method (the older name and signature)."""
    return skeleton(model, "tabconv", n_codebooks=codebooks, n_prototypes=prototypes, switches=switches)
