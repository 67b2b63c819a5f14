"""Counting arithmetic operations, per layer and in total, under named conventions.

Every leaf layer reports its own per-image cost, ``layer.cost(in_shape)``, as
named quantities (a dict ``{quantity: int}``); a container is read through
its structure (:mod:`tabconv_np.structure`), and the joins it computes itself
(residual sums) are counted here.  A leaf layer that reports no cost is an
error, never a zero, and so is a quantity that is not declared below.

Quantities (all counts are for the whole batch of ``input_shape``, default 1):

========================  ===========  ======================================================
quantity                  kind         what
========================  ===========  ======================================================
``macs``                  arithmetic   multiply-accumulates of convolutions and linear layers:
                                       ``C_out·H_out·W_out·(C_in/groups)·kh·kw``, ``in·out``
``bias_adds``             arithmetic   one add per output element of a layer with a bias
``bn_ops``                arithmetic   2 per element (BN in scale-shift form); 0 once folded
``act_ops``               arithmetic   1 per element (ReLU's comparison; 2 for a two-sided clip)
``pool_ops``              arithmetic   max pooling ``kh·kw − 1`` comparisons per output; average
                                       pooling ``kh·kw`` (adds and the scale); global ``H·W``
``residual_adds``         arithmetic   one add per element of a residual sum
``encode_macs``           arithmetic   PQ encoding: multiply-adds of the distances to every prototype
``encode_cmps``           arithmetic   PQ encoding: comparisons of the nearest-prototype search
``lookups``               memory       table entries read (one per codebook and output)
``lookup_adds``           arithmetic   adds that sum the looked-up entries
``params``                model        learnable parameters (BN running statistics excluded)
``storage_bytes``         model        bytes the layer keeps (every stored array)
``im2col_bytes``          workspace    float32 im2col lowering buffer
``mec_bytes``             workspace    float32 MEC lowering buffer
``int8_macs``             arithmetic   int8 x int8 multiply-accumulates (int32 sums) of the
                                       int8 layers; not in ``macs``, which counts float ones
``quant_ops``             arithmetic   activations quantised to 8 bits (multiply, round, clamp)
``zp_adds``               arithmetic   zero-point corrections of int8 sums, one per output
``dequant_mults``         arithmetic   multiplies that dequantise integer sums, one per output
========================  ===========  ======================================================

A new engine that needs another quantity declares it with
:func:`declare_quantity` (name, kind, description) before reporting it.
``model`` quantities are not multiplied by the batch size.  A layer may also
report one-time (offline) work under the key ``"offline"`` (a dict of the
same quantities, e.g. the multiply-adds that build a lookup table); it is kept
apart from per-inference work and counted only by conventions that say so.

Conventions (:data:`CONVENTIONS`) turn totals into one number each; the
reduction of a network against its exact origin is
``1 - cost(network) / cost(exact)`` in one convention
(:func:`reduction`, :func:`op_reduction`):

* ``macs``: conv and linear multiply-accumulates;
* ``fvcore``: MACs (fvcore prints one multiply-add as one "flop");
* ``thop``: MACs + 2 per BN element;
* ``flops``: 2·MACs (TF/Keras profilers, ``torch.utils.flop_counter``);
* ``paper``: the TabConv paper's: table lookups and their adds, plus the
  MACs of the layers left exact; encoding is not counted;
* ``full``: every arithmetic operation, encoding included;
* ``bolt``: Bolt/MADDNESS's ``multiplies + lookups``: MACs, encoding
  multiply-adds and the offline table-building multiply-adds, plus lookups;
* ``multiplies``: multiplications only: MACs, ``mults`` (Winograd,
  Strassen), encoding multiply-adds and dequantisation multiplies.  The
  convention that shows what Winograd and Strassen save (``tabconv ops
  --method winograd``).
"""
import json
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, ShapeError
from .module import Module
from .structure import Chain, Dag, Residual, join, node_input, outputs_of, structure_of

#: Declared quantities: name -> (kind, description).  Kinds: "arithmetic"
#: (summed by the "full" convention), "memory", "model" (not scaled by the
#: batch), "workspace".
QUANTITIES = {}


def declare_quantity(name, kind, description):
    """Declare a quantity that layers may report (see the module docstring)."""
    if kind not in ("arithmetic", "memory", "model", "workspace"):
        raise ConfigError(f"quantity {name!r}: unknown kind {kind!r}")
    QUANTITIES[name] = (kind, description)


for _name, _kind, _doc in (
        ("macs", "arithmetic", "conv and linear multiply-accumulates"),
        ("bias_adds", "arithmetic", "bias adds, one per output element"),
        ("bn_ops", "arithmetic", "batch norm, 2 per element"),
        ("act_ops", "arithmetic", "activation comparisons"),
        ("pool_ops", "arithmetic", "pooling comparisons or adds"),
        ("residual_adds", "arithmetic", "residual sums, one per element"),
        ("encode_macs", "arithmetic", "PQ encoding distance multiply-adds"),
        ("encode_cmps", "arithmetic", "PQ encoding comparisons"),
        ("lookups", "memory", "table entries read"),
        ("lookup_adds", "arithmetic", "adds of looked-up entries"),
        ("mults", "arithmetic", "multiplications of methods that count them apart from adds"),
        ("adds", "arithmetic", "additions of methods that count them apart from multiplications"),
        ("params", "model", "learnable parameters"),
        ("storage_bytes", "model", "bytes stored by the layer"),
        ("im2col_bytes", "workspace", "float32 im2col lowering buffer"),
        ("mec_bytes", "workspace", "float32 MEC lowering buffer"),
        ("int8_macs", "arithmetic", "int8 x int8 multiply-accumulates (int32 sums)"),
        ("quant_ops", "arithmetic", "activations quantised to 8 bits (multiply, round, clamp)"),
        ("zp_adds", "arithmetic", "zero-point corrections of int8 sums, one per output"),
        ("dequant_mults", "arithmetic", "multiplies that dequantise integer sums"),
        ("index_reads", "memory", "column indices read by sparse (CSR) products, one per multiply"),
        ("popcounts", "arithmetic", "popcounts of 64-bit words (binary and ternary layers)"),
        ("bit_ops", "arithmetic", "64-bit XORs and ANDs of packed +-1 products"),
        ("binarize_ops", "arithmetic", "values binarised and packed into bits, a compare each")):
    declare_quantity(_name, _kind, _doc)

#: The quantities every row carries (0 when a layer does not report them), in table order.
FIELDS = tuple(QUANTITIES)


def _arithmetic(t):
    return sum(v for k, v in t.items() if QUANTITIES.get(k, ("",))[0] == "arithmetic")


@dataclass(frozen=True)
class Convention:
    """A named way to turn op-count totals into one number."""

    name: str
    description: str
    cost: object          # callable(totals dict) -> int


#: The counting conventions, by name (see the module docstring).
CONVENTIONS = {c.name: c for c in (
    Convention("macs", "multiply-accumulates of conv and linear layers",
               lambda t: t.get("macs", 0)),
    Convention("fvcore", "MACs, as fvcore counts 'flops'", lambda t: t.get("macs", 0)),
    Convention("thop", "MACs plus 2 per batch-norm element, as thop counts",
               lambda t: t.get("macs", 0) + t.get("bn_ops", 0)),
    Convention("flops", "2 x MACs, as TF/Keras profilers and torch.utils.flop_counter count",
               lambda t: 2 * t.get("macs", 0)),
    Convention("paper", "table layers' lookups + lookup adds, plus the exact layers' MACs, against "
               "the exact network's MACs (conv + linear); encoding is not counted, as in the "
               "TabConv paper",
               lambda t: t.get("lookups", 0) + t.get("lookup_adds", 0) + t.get("macs", 0)),
    Convention("full", "every arithmetic operation (encoding distances and comparisons, lookup adds, "
               "MACs, bias adds, ReLU, pooling, residual adds) against the same for the BN-folded "
               "exact network", _arithmetic),
    Convention("bolt", "Bolt/MADDNESS's multiplies + lookups: MACs, encoding multiply-adds and the "
               "offline table-building multiply-adds, plus table lookups",
               lambda t: (t.get("macs", 0) + t.get("encode_macs", 0) + t.get("lookups", 0)
                          + t.get("offline", {}).get("macs", 0))),
    Convention("multiplies", "multiplications only: MACs, Winograd's and Strassen's products, "
               "encoding multiply-adds and dequantisation multiplies",
               lambda t: (t.get("macs", 0) + t.get("mults", 0) + t.get("encode_macs", 0)
                          + t.get("dequant_mults", 0))),
)}


def reduction(cost, exact):
    """``1 - cost / exact`` (0.0 when ``exact`` is 0): the fraction of operations saved."""
    return 1.0 - cost / exact if exact else 0.0


# ----------------------------------------------------------------- rows
def _leaf_row(name, module, in_shape):
    if type(module).cost is Module.cost:
        raise ConfigError(f"count_ops: layer {name or '<body>'} ({type(module).__name__}) does not "
                          f"report its cost; every leaf layer must implement cost(in_shape)")
    out_shape = tuple(module.out_shape(in_shape))
    cost = dict(module.cost(tuple(in_shape)))
    offline = cost.pop("offline", {})
    for k in list(cost) + list(offline):
        if k not in QUANTITIES:
            raise ConfigError(f"count_ops: layer {name} ({type(module).__name__}) reports the "
                              f"undeclared quantity {k!r}; declare it with ops.declare_quantity")
    r = dict.fromkeys(FIELDS, 0)
    r.update(name=name, type=type(module).__name__, in_shape=list(in_shape), out_shape=list(out_shape))
    r["params"] = int(sum(v.size for v in module.learnable().values()))
    r["storage_bytes"] = int(sum(v.nbytes for v in module.params.values()))
    r.update({k: int(v) for k, v in cost.items()})
    r["offline"] = {k: int(v) for k, v in offline.items()}
    return r, out_shape


def _join_row(name, kind, shape, adds, act):
    r = dict.fromkeys(FIELDS, 0)
    n = int(np.prod(shape))
    r.update(name=name, type=kind, in_shape=list(shape), out_shape=list(shape),
             residual_adds=adds * n, act_ops=n if act else 0, offline={})
    return r


def rows(module, in_shape, name=""):
    """Op-count rows ``[dict, ...]`` of ``module`` for one image of shape ``in_shape``, and its output shape.

    Leaves report ``cost``; containers are walked through their structure:
    a chain in order, a residual block's main branch, its shortcut and a join
    row (``<name>.add_relu``, type ``Add+ReLU``), a graph's nodes with one
    ``Add`` row per sum node.
    """
    node = structure_of(module, name)
    if node is None:
        r, out = _leaf_row(name, module, in_shape)
        return [r], out
    out_rows = []
    if isinstance(node, Chain):
        shape = tuple(in_shape)
        for n, child in node.items:
            rs, shape = rows(child, shape, join(name, n))
            out_rows += rs
        return out_rows, shape
    if isinstance(node, Residual):
        shape = tuple(in_shape)
        for n, child in node.main:
            rs, shape = rows(child, shape, join(name, n))
            out_rows += rs
        short = tuple(in_shape)
        for n, child in node.shortcut:
            rs, short = rows(child, short, join(name, n))
            out_rows += rs
        if short != shape:
            raise ShapeError(f"{name}: residual branches give {shape} and {short}")
        act = "_relu" if node.act == "relu" else ""
        out_rows.append(_join_row(join(name, "add" + act), "Add+ReLU" if act else "Add", shape, 1, act))
        return out_rows, shape
    assert isinstance(node, Dag)
    shapes = {"input": tuple(in_shape)}
    for n, inputs, child in node.nodes:
        if child is not None:
            rs, shapes[n] = rows(child, node_input(child, inputs, shapes), join(name, n))
            out_rows += rs
        else:
            got = [shapes[v] for v in inputs]
            if len(set(got)) != 1:
                raise ShapeError(f"{join(name, n)}: sum node adds differently shaped inputs {got}")
            shapes[n] = got[0]
            out_rows.append(_join_row(join(name, n), "Add", got[0], len(inputs) - 1, False))
    return out_rows, shapes[outputs_of(node)[0]]


class OpCount:
    """Per-layer rows and totals of :func:`count_ops`.

    Attributes
    ----------
    rows : list of dict
        One dict per leaf layer and per join, keys ``name, type, in_shape,
        out_shape``, every quantity (``FIELDS`` and any declared later) and
        ``offline`` (a dict of one-time quantities).
    total : dict
        Sums of the quantities, ``offline`` sums, ``ops`` (all arithmetic) and
        one entry per convention in :data:`CONVENTIONS`.
    """

    def __init__(self, rows, input_shape):
        self.rows, self.input_shape = rows, tuple(input_shape)
        names = [q for q in QUANTITIES if any(q in r for r in rows)]
        t = {q: int(sum(r.get(q, 0) for r in rows)) for q in dict.fromkeys(FIELDS + tuple(names))}
        off = {}
        for r in rows:
            for k, v in r.get("offline", {}).items():
                off[k] = off.get(k, 0) + v
        t["offline"] = off
        t["ops"] = _arithmetic(t)
        for c in CONVENTIONS.values():
            if c.name not in t:
                t[c.name] = int(c.cost(t))
        self.total = t

    def cost(self, convention):
        """The total in one named convention."""
        if convention not in CONVENTIONS:
            raise ConfigError(f"unknown convention {convention!r} (known: {', '.join(CONVENTIONS)})")
        return int(CONVENTIONS[convention].cost(self.total))

    def to_dict(self):
        return {"input_shape": list(self.input_shape), "total": self.total, "layers": self.rows}

    def to_json(self, **kw):
        return json.dumps(self.to_dict(), **kw)

    def table(self):
        """A per-layer text table (like fvcore's ``flop_count_table``) with a total line."""
        cols = ["macs", "bias_adds", "bn_ops", "act_ops", "pool_ops", "residual_adds", "params"]
        if any(r["lookups"] for r in self.rows):
            cols[1:1] = ["encode_macs", "lookups", "lookup_adds"]
        if any(r.get("mults") for r in self.rows):
            cols[1:1] = ["mults", "adds"]
        if any(r.get("int8_macs") for r in self.rows):
            cols[1:1] = ["int8_macs", "quant_ops", "zp_adds", "dequant_mults"]
        if any(r.get("popcounts") for r in self.rows):
            cols[1:1] = ["popcounts", "bit_ops", "binarize_ops"]
        if any(r.get("adds") for r in self.rows) and "adds" not in cols:
            cols[1:1] = ["adds"]
        head = ["layer", "type", "output"] + cols
        body = [[r["name"], r["type"], "x".join(map(str, r["out_shape"]))] + [_si(r.get(c, 0)) for c in cols]
                for r in self.rows]
        body.append(["total", "", ""] + [_si(self.total[c]) for c in cols])
        widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head))]
        line = lambda cells: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths)))
        out = [line(head), "-" * (sum(widths) + 2 * len(widths))] + [line(b) for b in body]
        t = self.total
        out.append(f"MACs {t['macs'] / 1e6:.2f} M | params {t['params'] / 1e6:.3f} M | "
                   f"fvcore {_si(t['fvcore'])} | thop {_si(t['thop'])} | flops (2*MACs) {_si(t['flops'])}"
                   f" | all arithmetic {_si(t['ops'])}"
                   + (f" | multiplies {_si(t['multiplies'])}" if t.get("mults") else "")
                   + (f" | int8 MACs {t['int8_macs'] / 1e6:.2f} M" if t.get("int8_macs") else ""))
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

    Raises
    ------
    ConfigError
        A leaf layer reports no cost, or an undeclared quantity.
    """
    body = getattr(model, "body", model)
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ShapeError("count_ops: the model has no input_shape; pass input_shape=(C, H, W)")
    try:
        input_shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError, OverflowError):
        raise ShapeError(f"count_ops: input_shape must be ints, got {input_shape!r}") from None
    if len(input_shape) == 3:
        batch, per_image = 1, input_shape
    elif len(input_shape) == 4:
        batch, per_image = input_shape[0], input_shape[1:]
    else:
        raise ShapeError(f"count_ops: input_shape must be (C, H, W) or (N, C, H, W), got {input_shape}")
    out, _ = rows(body, per_image)
    for r in out:
        for q, (kind, _) in QUANTITIES.items():
            if kind != "model" and q in r:
                r[q] *= batch
        r["offline"] = dict(r["offline"])
    return OpCount(out, input_shape)


def op_reduction(network, exact_net, input_shape=None):
    """Operation and storage savings of a converted network, under named conventions.

    Parameters
    ----------
    network : Network
        A converted network (tables or any other engine's layers).
    exact_net : Network
        The network it came from (BN folded or not: MACs are the same; for
        ``"full"`` pass the BN-folded one, as ``ConversionResult.exact`` is).
    input_shape : tuple, optional
        ``(C, H, W)`` or ``(N, C, H, W)``; default the network's, batch 1.

    Returns
    -------
    dict
        ``{"paper": {...}, "full": {...}, "bolt": {...}, "storage": {...}}``;
        each convention has ``reduction`` (fraction saved), ``cost``,
        ``exact``, ``ratio`` (exact / cost) and ``convention`` (what is
        counted; ``paper`` compares with the exact network's MACs).
        ``storage``: ``table_bytes`` (the converted layers: those whose type
        or shapes changed, or new, as the factors of a low-rank layer), ``replaced_weight_bytes``
        (the exact layers they replace),
        ``network_bytes`` and ``exact_network_bytes``.
    """
    t = count_ops(network, input_shape)
    e = count_ops(exact_net, input_shape)
    out = {}
    for name in ("paper", "full", "bolt"):
        c = CONVENTIONS[name]
        cost = t.cost(name)
        base = e.cost("macs" if name == "paper" else name)
        out[name] = {"reduction": reduction(cost, base), "cost": int(cost), "exact": int(base),
                     "ratio": base / cost if cost else float("inf"), "convention": c.description}
    exact_rows, rows = {r["name"]: r for r in e.rows}, {r["name"]: r for r in t.rows}
    # layers whose type changed, or that are new / gone (a layer replaced by a block of several),
    # or of another width (channel pruning)
    def same(r, other):
        return all(r[k] == other.get(k) for k in ("type", "in_shape", "out_shape"))
    changed = [r for r in t.rows if not same(r, exact_rows.get(r["name"], {}))]
    replaced = [r for r in e.rows if not same(r, rows.get(r["name"], {}))]
    out["storage"] = {"table_bytes": int(sum(r["storage_bytes"] for r in changed)),
                      "replaced_weight_bytes": int(sum(r["storage_bytes"] for r in replaced)),
                      "network_bytes": int(t.total["storage_bytes"]),
                      "exact_network_bytes": int(e.total["storage_bytes"])}
    out["table_layers"] = len(changed)
    out["encode_macs"] = int(t.total["encode_macs"])
    return out
