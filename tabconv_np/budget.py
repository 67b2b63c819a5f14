"""The per-layer search of ``tabconv compare --budget``: a method and setting per switch, under a budget.

A budget limits one figure of the whole network (per image, batch 1):

* ``ops=...``: operations in the ``full`` convention (every arithmetic
  operation, encoding included; :mod:`tabconv_np.ops`);
* ``latency=...``: the prepared plan's time at batch 1;
* ``storage=...``: bytes of every stored array;

given as a percentage of the exact network's figure (``ops=40%``) or as an
amount (``ops=12M``, ``latency=2.5ms``, ``storage=4MiB``).

The search (:func:`search`) reads the per-switch figures of every result of
the grid (:mod:`tabconv_np.compare`): for each switch and each setting that
converted it, the damage done to the exact network by that switch alone
converted, and the switch's cost.  The damage is measured as the increase of
the validation cross-entropy rather than the accuracy drop: one switch alone
rarely moves the accuracy of a few hundred images by more than an image or
two (noise, often of either sign), while the loss moves smoothly with the
error the switch adds.  A negative increase (a switch that alone seems to
help) is noise and counts as none.  The search assumes that damages and
costs add up over switches, and is greedy:

1. start from the exact network;
2. while the estimated cost is over the budget, make the move (one switch to
   a cheaper option) that adds the least validation loss per unit of cost
   saved (a move that adds none comes first, the largest saving first);
3. then, while the budget allows, make the move that takes the most
   validation loss back (an option with less damage, and more expensive:
   a move that costs nothing would trade on noise, and would, for the final
   classifier, give up the refit the plan does at the end, which no single
   switch's figures can show).

Damages do not add up exactly: errors of several converted switches
compound (pruning without a refit most), so the plan is converted and
measured for real, and the report gives its distance from the best single
setting.

Latency is estimated from each switch's layers timed in place in the
network's own forward pass; the plan's real latency is then measured as a
prepared plan, as every result is, and when it is over the budget the search
runs again aiming lower by the ratio (at most
:data:`~tabconv_np.compare.LATENCY_TRIES` tries in all).  A budget the exact network meets gives
an all-exact plan.  The chosen plan is converted for real
(:func:`~tabconv_np.conversion.mixed.convert_plan`), measured like every
result, and compared with the best single-method result (by validation
accuracy) that meets the same budget.
"""
import re
from dataclasses import dataclass

from .errors import ConfigError

#: Budget kinds and the figure of a result row each limits.
KINDS = ("ops", "latency", "storage")
_UNITS = {"ops": {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9},
          "latency": {"s": 1.0, "ms": 1e-3, "us": 1e-6},
          "storage": {"": 1, "B": 1, "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30, "kB": 1e3, "MB": 1e6}}


@dataclass(frozen=True)
class Budget:
    """``kind`` (one of :data:`KINDS`), and ``fraction`` (of the exact network's figure) or ``amount``
    (operations, seconds or bytes); ``text`` as given."""

    kind: str
    fraction: float = None
    amount: float = None
    text: str = ""

    def limit(self, exact):
        """The budget as an amount, given the exact network's figure ``exact``."""
        return self.fraction * exact if self.fraction is not None else self.amount


def parse_budget(text):
    """A :class:`Budget` from ``KIND=VALUE`` (see the module docstring).

    Raises
    ------
    ConfigError
        An unknown kind, a value that is not a positive number with a known unit.
    """
    kind, _, value = (text or "").partition("=")
    kind, value = kind.strip(), value.strip()
    if kind not in KINDS:
        raise ConfigError(f"--budget {text!r}: expected KIND=VALUE with KIND one of {', '.join(KINDS)} "
                          f"(e.g. ops=40%, latency=2.5ms, storage=4MiB)")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|[A-Za-z]*)", value)
    units = _UNITS[kind]
    if not m or float(m.group(1)) <= 0 or (m.group(2) != "%" and m.group(2) not in units):
        raise ConfigError(f"--budget {text!r}: {kind} takes a positive percentage of the exact network "
                          f"(e.g. {kind}=50%) or an amount in {', '.join(u or 'a plain number' for u in units)}")
    number, unit = float(m.group(1)), m.group(2)
    if unit == "%":
        return Budget(kind, fraction=number / 100, text=text)
    return Budget(kind, amount=number * units[unit], text=text)


def figure(row, kind, exact_row):
    """A result row's figure that a budget of ``kind`` limits (ops, seconds at batch 1, bytes)."""
    if kind == "ops":
        return row["ops"]["full"]
    if kind == "storage":
        return row["storage_bytes"]
    return row["latency"]["b1"] * exact_row["latency_ms"]["b1"] / 1e3


def _switch_cost(fig, kind):
    return {"ops": fig["full_ops"], "storage": fig["storage_bytes"], "latency": fig["seconds"]}[kind]


@dataclass(frozen=True)
class Option:
    """One way to run a switch: ``key`` of the result it comes from (None: exact), the validation loss
    it adds alone and its cost."""

    key: object
    loss: float
    cost: float


def options(rows, exact_row, kind):
    """``{switch: [Option]}``: exact first, then every result that converted the switch (its
    validation loss increase alone, 0 where negative)."""
    out = {}
    for name, fig in exact_row["switches"].items():
        out[name] = [Option(None, 0.0, _switch_cost(fig, kind))]
        for r in rows:
            f = r["switches"].get(name)
            if f and f["converted"] and f.get("val_loss_increase") is not None:     # below 0: noise
                out[name].append(Option(r["key"], max(f["val_loss_increase"], 0.0), _switch_cost(f, kind)))
    return out


def greedy(opts, total, limit):
    """``(choice, estimated total)``: ``{switch: Option}`` by the two greedy phases of the module
    docstring, from the exact network's ``total`` cost toward ``limit``."""
    choice = {s: o[0] for s, o in opts.items()}
    while total > limit:
        moves = [(s, o) for s, os in opts.items() for o in os if o.cost < choice[s].cost]
        if not moves:
            break                                            # cannot get under the budget
        s, o = min(moves, key=lambda m: (max(m[1].loss - choice[m[0]].loss, 0.0)
                                         / (choice[m[0]].cost - m[1].cost), -(choice[m[0]].cost - m[1].cost)))
        total += o.cost - choice[s].cost
        choice[s] = o
    while True:
        moves = [(s, o) for s, os in opts.items() for o in os
                 if o.loss < choice[s].loss and choice[s].cost < o.cost <= limit - total + choice[s].cost]
        if not moves or total > limit:
            break
        s, o = max(moves, key=lambda m: choice[m[0]].loss - m[1].loss)
        total += o.cost - choice[s].cost
        choice[s] = o
    return choice, total


def search(rows, exact_row, budget, tighten=1.0):
    """The per-layer search (module docstring) over the grid's ``rows``; the estimate aims at
    ``tighten`` times the limit (below 1 when an earlier plan's measured latency was over it).

    Returns
    -------
    dict
        ``budget`` (text, kind, limit), ``choice`` (``{switch: result key or None}``), ``estimate``
        (the estimated cost), ``feasible`` (whether the estimate meets the limit),
        ``expected_loss_increase`` (sum of the chosen options' validation loss increases),
        ``best_single`` (the key of the result with the
        best validation accuracy among those that meet the budget, or None).
    """
    exact_fig = figure(exact_row, budget.kind, exact_row)
    limit = budget.limit(exact_fig)
    opts = options(rows, exact_row, budget.kind)
    base = sum(o[0].cost for o in opts.values())
    # latency: the per-switch times are the forward's own, scaled to the plan's measured time
    scale = exact_fig / base if budget.kind == "latency" and base else 1.0
    rest = exact_fig - base * scale
    choice, est = greedy(opts, base, (tighten * limit - rest) / scale)
    fits = [r for r in rows if figure(r, budget.kind, exact_row) <= limit]
    best = max(fits, key=lambda r: r["val_accuracy"], default=None)
    return {"budget": {"text": budget.text, "kind": budget.kind, "limit": limit, "exact": exact_fig},
            "choice": {s: o.key for s, o in choice.items()}, "estimate": rest + est * scale,
            "feasible": rest + est * scale <= limit * (1 + 1e-9),
            "expected_loss_increase": sum(o.loss for o in choice.values()),
            "best_single": best["key"] if best else None}
