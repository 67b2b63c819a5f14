"""The report of ``tabconv compare``: a markdown table, and with matplotlib the pictures.

:func:`table` gives the results as markdown; :func:`write_report` writes a
report folder: ``report.md`` (the table, the per-layer plan, the pictures),
``results.json`` (every row, :mod:`tabconv_np.compare` lists the fields), and,
when matplotlib is installed (an optional extra: ``pip install matplotlib``),
``pareto_ops.png``, ``pareto_latency.png``, ``pareto_storage.png`` (test
accuracy against ``full``-convention operations, batch-1 latency and storage,
one marker per method, the Pareto front as a line) and ``layers.png`` (where
the operations and the time go, switch by switch, exact network vs the chosen
plan).  matplotlib is imported only here, only when a report is written.
"""
import json
import os

from .outputs import write_atomic

MIB = 2 ** 20
PLOTS = ("pareto_ops", "pareto_latency", "pareto_storage", "layers")
NO_PLOTS = ("Plots need matplotlib, an optional extra: `pip install matplotlib` "
            "(or `pip install -e \".[plots]\"` in a checkout), then run the same command again.")


def _setting(row):
    s = row["settings"]
    return ", ".join(f"{k}={v}" for k, v in s.items()) if s else ("–" if row["method"] == "exact" else "defaults")


def table(rows):
    """Markdown lines: one row per result (the exact network first)."""
    head = ("| method | settings | accuracy | retention | agreement | val. accuracy | own units (M) | "
            "full ops (M) | full ops: x fewer | storage (MiB) | time b1 / exact | time b32 / exact | "
            "conversion (s) |")
    out = [head, "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        u = r["own_units"]
        out.append(f"| {r['method']} | {_setting(r)} | {r['accuracy']:.2%} | {r['retention']:.3f} | "
                   f"{r['agreement']:.3f} | {r['val_accuracy']:.2%} | {u['value'] / 1e6:.2f} {u['name']} | "
                   f"{r['ops']['full'] / 1e6:.2f} | {r['ops']['full_ratio']:.2f} | {r['storage_bytes'] / MIB:.2f} | "
                   f"{r['latency']['b1']:.2f} | {r['latency']['b32']:.2f} | {r['conversion_s']:.1f} |")
    return out


def plan_lines(found, rows, exact_row):
    """Markdown lines of a budget search: the plan per switch, and the plan against the best single setting."""
    by_key = {r["key"]: r for r in rows}
    b, row = found["budget"], found["row"]
    unit = {"ops": ("M full ops", 1e-6), "latency": ("ms at batch 1", 1e3), "storage": ("MiB", 1 / MIB)}[b["kind"]]
    out = [f"Budget `{b['text']}`: at most {b['limit'] * unit[1]:.3g} {unit[0]} (exact network: "
           f"{b['exact'] * unit[1]:.3g}); estimated {found['estimate'] * unit[1]:.3g}, measured "
           f"{'within' if found['meets_budget'] else 'OVER'} the budget.", "",
           "| switch | chosen | val. loss increase alone | val. accuracy drop alone | full ops (M) | "
           "exact full ops (M) |", "|---|---|---:|---:|---:|---:|"]
    for name, key in found["choice"].items():
        alone = by_key[key]["switches"][name] if key is not None else None
        drop = "– | –" if key is None else f"{alone['val_loss_increase']:+.4f} | {alone['val_drop']:+.2%}"
        out.append(f"| {name} | {'exact' if key is None else by_key[key]['label']} | {drop} | "
                   f"{row['switches'][name]['full_ops'] / 1e6:.2f} | "
                   f"{exact_row['switches'][name]['full_ops'] / 1e6:.2f} |")
    out += ["", f"The plan: test accuracy {row['accuracy']:.2%} (validation {row['val_accuracy']:.2%}), "
            f"{row['ops']['full'] / 1e6:.2f} M full ops (x{row['ops']['full_ratio']:.2f} fewer), "
            f"{row['storage_bytes'] / MIB:.2f} MiB, time b1 {row['latency']['b1']:.2f} / b32 "
            f"{row['latency']['b32']:.2f} of exact."]
    v = found["vs_best_single"]
    out.append("No single-method setting of the grid meets this budget." if v is None else
               f"Best single-method setting within the same budget (by validation accuracy): {v['label']}; "
               f"the plan's test accuracy is {100 * v['accuracy_diff']:+.2f} points from it "
               f"(validation {100 * v['val_accuracy_diff']:+.2f}).")
    return out


def pyplot():
    """matplotlib's pyplot (Agg, no display), or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _front(points):
    """The Pareto front of ``(cost, accuracy)`` points: cheapest first, each more accurate than the last."""
    out, best = [], -1.0
    for c, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            out.append((c, a))
            best = a
    return out


#: The x axis of each Pareto plot: (title, figure of a row).
AXES = {
    "pareto_ops": ("full-convention operations per image (M)", lambda r: r["ops"]["full"] / 1e6),
    "pareto_latency": ("latency at batch 1 / exact", lambda r: r["latency"]["b1"]),
    "pareto_storage": ("storage (MiB)", lambda r: r["storage_bytes"] / MIB),
}
MARKERS = "osD^v<>ph*"


def pareto_plot(plt, rows, name, path):
    """One Pareto plot (:data:`AXES`), test accuracy against one figure, one marker per method."""
    title, fig_of = AXES[name]
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=80)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for i, m in enumerate(methods):
        pts = [(fig_of(r), 100 * r["accuracy"]) for r in rows if r["method"] == m]
        marker = "*" if m == "exact" else "X" if m == "plan" else MARKERS[i % len(MARKERS)]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=70 if m in ("exact", "plan") else 36,
                   label=m, zorder=3)
    front = _front([(fig_of(r), 100 * r["accuracy"]) for r in rows])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.6", lw=1, zorder=1,
            label="Pareto front")
    if name != "pareto_latency":
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(title)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def layers_plot(plt, exact_row, plan_row, path):
    """Per switch: full-convention operations and batch-1 time (the forward's own, per layer), exact vs plan."""
    import numpy as np
    names = list(exact_row["switches"])
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for ax, (key, scale, title) in zip(axes, (("full_ops", 1e-6, "full ops (M)"), ("seconds", 1e3, "time b1 (ms)"))):
        ax.bar(x - 0.2, [exact_row["switches"][n][key] * scale for n in names], 0.4, label="exact")
        ax.bar(x + 0.2, [plan_row["switches"][n][key] * scale for n in names], 0.4, label=plan_row["label"])
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=60, fontsize=7)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(folder, doc, command):
    """Write the report folder (module docstring) of a compare run's ``doc`` (what ``--json`` prints);
    returns the paths written."""
    os.makedirs(folder, exist_ok=True)
    rows = [doc["exact"]] + doc["results"] + ([doc["search"]["row"]] if doc.get("search") else [])
    written, pictures = [], []
    plt = pyplot()
    if plt is not None:
        for name in PLOTS[:3]:
            pareto_plot(plt, rows, name, os.path.join(folder, name + ".png"))
            pictures.append(name)
        if doc.get("search"):
            layers_plot(plt, doc["exact"], doc["search"]["row"], os.path.join(folder, "layers.png"))
            pictures.append("layers")
        written += [os.path.join(folder, p + ".png") for p in pictures]
    ctx = doc["context"]
    lines = ["# tabconv compare", "", f"Generated by `{command}`.", "",
             f"{ctx['calib']} calibration and {ctx['val']} validation images from {ctx['train']} (the validation "
             f"split chooses), {ctx['test_images']} test images from {ctx['test']} (they only report); "
             f"{ctx['threads']} thread(s). Operations per image; full = every arithmetic operation, encoding "
             "included (`tabconv_np.ops`, convention `full`); own units: each method's own count (its "
             "column names it); storage: every stored array. Time: both networks as prepared plans, "
             f"median of {ctx['repeats']} interleaved samples against the exact network in the same run "
             "(< 1: faster).", ""]
    lines += table(rows)
    lines += [""] + [f"Refused: {r['label']}: {r['error']}" for r in doc.get("refused", [])]
    if doc.get("search"):
        lines += ["", "## Per-layer plan under a budget", ""] + plan_lines(doc["search"], doc["results"], doc["exact"])
    lines += ["", "## Pictures", ""]
    lines += ([f"![{p}]({p}.png)" for p in pictures] if pictures else [NO_PLOTS])
    for name, text in (("report.md", "\n".join(lines) + "\n"), ("results.json", json.dumps(doc, indent=1) + "\n")):
        written.append(write_text(os.path.join(folder, name), text))
    return written


def write_text(path, text):
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    write_atomic(path, write)
    return path
