"""Counting arithmetic operations, per layer and in total.

Conventions (all counts are for the whole batch given by ``input_shape``'s
batch size, default 1):

* ``macs``: multiply-accumulates of convolutions and linear layers:
  ``C_out·H_out·W_out·(C_in/groups)·kh·kw`` and ``in·out``.  The primary unit.
* ``bias_adds``: one add per output element of a layer with a bias.
* ``bn_ops``: 2 per element (one multiply and one add, BN in scale-shift
  form); 0 once folded into the conv before it.
* ``act_ops``: 1 per element (ReLU's comparison).
* ``pool_ops``: max pooling ``kh·kw − 1`` comparisons per output; average
  pooling ``kh·kw − 1`` adds and 1 multiply per output; global average ``H·W``.
* ``residual_adds``: one add per element of a residual sum.
* table layers (TabConv) add ``encode_macs`` (distances to every prototype),
  ``encode_cmps`` (comparisons of the nearest-prototype search),
  ``lookups`` and ``lookup_adds`` (aggregation); see ``tabconv_np.tables``.
* ``params``: learnable parameters (BN's running statistics excluded, as in
  ``torch.nn.Module.parameters()``); ``storage_bytes``: bytes the layer keeps.
* ``im2col_bytes`` / ``mec_bytes``: float32 lowering workspace of a conv.

Presets reproduce what users' tools print: ``fvcore`` (MACs only),
``thop`` (MACs + 2 per BN element), ``flops`` (2·MACs).
"""
import json

import numpy as np

FIELDS = ("macs", "bias_adds", "bn_ops", "act_ops", "pool_ops", "residual_adds",
          "encode_macs", "encode_cmps", "lookups", "lookup_adds",
          "params", "storage_bytes", "im2col_bytes", "mec_bytes")

#: Fields that are arithmetic operations (summed into ``ops``).
ARITHMETIC = ("macs", "bias_adds", "bn_ops", "act_ops", "pool_ops", "residual_adds",
              "encode_macs", "encode_cmps", "lookup_adds")


def row(name, module, in_shape, out_shape, residual=False, **extra):
    """Op-count row of one leaf layer for ONE image; ``count_ops`` scales by the batch."""
    from . import layers as L
    r = dict.fromkeys(FIELDS, 0)
    r.update(name=name, type=type(module).__name__, in_shape=list(in_shape), out_shape=list(out_shape))
    n_out = int(np.prod(out_shape))
    p = module.params
    if residual:
        r["type"] = "Add+ReLU"
        r["residual_adds"] = r["act_ops"] = n_out
    elif isinstance(module, L.Conv2d):
        cin_g = module.in_channels // module.groups
        r["macs"] = n_out * cin_g * module.kernel_size[0] * module.kernel_size[1]
        r["bias_adds"] = n_out if "bias" in p else 0
        from .functional import lowering_workspace_bytes
        ws = lowering_workspace_bytes(in_shape[0], in_shape[1], in_shape[2], module.kernel_size[0],
                                      module.kernel_size[1], module.stride, module.padding,
                                      module.dilation)
        r["im2col_bytes"], r["mec_bytes"] = ws["im2col"], ws["mec"]
    elif isinstance(module, L.Linear):
        r["macs"] = module.in_features * module.out_features
        r["bias_adds"] = module.out_features if "bias" in p else 0
    elif isinstance(module, L.BatchNorm2d):
        r["bn_ops"] = 2 * n_out
    elif isinstance(module, L.ReLU):
        r["act_ops"] = n_out
    elif isinstance(module, L.MaxPool2d):
        r["pool_ops"] = n_out * (module.kernel_size[0] * module.kernel_size[1] - 1)
    elif isinstance(module, L.AvgPool2d):
        r["pool_ops"] = n_out * module.kernel_size[0] * module.kernel_size[1]
    elif isinstance(module, L.GlobalAvgPool2d):
        r["pool_ops"] = int(np.prod(in_shape))
    if not residual:
        learn = {k: v for k, v in p.items() if k not in ("running_mean", "running_var")}
        r["params"] = int(sum(v.size for v in learn.values()))
        r["storage_bytes"] = int(sum(v.nbytes for v in p.values()))
    r.update(extra)
    return r


class OpCount:
    """Per-layer rows and totals of :func:`count_ops`.

    Attributes
    ----------
    rows : list of dict
        One dict per leaf layer, keys ``name, type, in_shape, out_shape`` and ``FIELDS``.
    total : dict
        Sums of ``FIELDS`` plus ``ops`` (all arithmetic) and the presets
        ``fvcore``, ``thop``, ``flops``.
    """

    def __init__(self, rows, input_shape):
        self.rows, self.input_shape = rows, tuple(input_shape)
        t = {f: int(sum(r[f] for r in rows)) for f in FIELDS}
        t["ops"] = int(sum(t[f] for f in ARITHMETIC))
        t["fvcore"] = t["macs"]
        t["thop"] = t["macs"] + t["bn_ops"]
        t["flops"] = 2 * t["macs"]
        self.total = t

    def to_dict(self):
        return {"input_shape": list(self.input_shape), "total": self.total, "layers": self.rows}

    def to_json(self, **kw):
        return json.dumps(self.to_dict(), **kw)

    def table(self):
        """A per-layer text table (like fvcore's ``flop_count_table``) with a total line."""
        cols = ["macs", "bias_adds", "bn_ops", "act_ops", "pool_ops", "residual_adds", "params"]
        table_layers = any(r["lookups"] for r in self.rows)
        if table_layers:
            cols[1:1] = ["encode_macs", "lookups", "lookup_adds"]
        head = ["layer", "type", "output"] + cols
        body = [[r["name"], r["type"], "x".join(map(str, r["out_shape"]))] + [_si(r[c]) for c in cols]
                for r in self.rows]
        body.append(["total", "", ""] + [_si(self.total[c]) for c in cols])
        widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head))]
        line = lambda cells: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
        out = [line(head), "-" * (sum(widths) + 2 * len(widths))] + [line(b) for b in body]
        t = self.total
        out.append(f"MACs {t['macs'] / 1e6:.2f} M | params {t['params'] / 1e6:.3f} M | "
                   f"fvcore {_si(t['fvcore'])} | thop {_si(t['thop'])} | flops (2*MACs) {_si(t['flops'])}"
                   f" | all arithmetic {_si(t['ops'])}")
        return "\n".join(out)

    def __repr__(self):
        return (f"OpCount(input={self.input_shape}, macs={self.total['macs']:,}, "
                f"params={self.total['params']:,}, layers={len(self.rows)})")


def _si(v):
    v = float(v)
    for unit, s in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= unit:
            return f"{v / unit:.2f}{s}"
    return f"{v:.0f}"


def count_ops(model, input_shape=None):
    """Count every arithmetic operation of ``model`` on an input of ``input_shape``.

    Parameters
    ----------
    model : Network or Module
    input_shape : tuple, optional
        ``(C, H, W)`` for one image or ``(N, C, H, W)``; defaults to the
        network's ``input_shape``.

    Returns
    -------
    OpCount
    """
    from .errors import ShapeError
    body = getattr(model, "body", model)
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ShapeError("count_ops: the model has no input_shape; pass input_shape=(C, H, W)")
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) == 3:
        batch, per_image = 1, input_shape
    elif len(input_shape) == 4:
        batch, per_image = input_shape[0], input_shape[1:]
    else:
        raise ShapeError(f"count_ops: input_shape must be (C, H, W) or (N, C, H, W), got {input_shape}")
    rows = body.count(per_image, "")
    for r in rows:
        for f in FIELDS:
            if f not in ("params", "storage_bytes"):
                r[f] *= batch
    return OpCount(rows, input_shape)
