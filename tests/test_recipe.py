"""Recipes: the default covers every CLI option, overlays, clear located errors, round trips."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from hardneg.cli import app
from hardneg.errors import HardnegError
from hardneg.loop import RoundGate, RoundInit
from hardneg.options import coerce
from hardneg.recipe import (
    FLOW_OPTIONS,
    SECTIONS,
    RecipeError,
    default_recipe_path,
    demo_overrides,
    demo_recipe,
    dump_recipe,
    load_recipe,
    parse_override,
    recipe_keys,
    render_default_recipe,
)
from hardneg.select import SelectionPolicy
from hardneg.train import TrainConfig

runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "my.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def default_raw() -> dict:
    return tomllib.loads(default_recipe_path().read_text())


def cli_params(command: str) -> dict:
    group = get_command(app)
    return {p.name: p for p in group.commands[command].params}


# ---- the default recipe -------------------------------------------------------------------
def test_default_recipe_lists_every_key_of_every_section():
    raw = default_raw()
    assert list(raw) == list(SECTIONS)
    for section in SECTIONS:
        assert set(raw[section]) == set(recipe_keys(section)), section


def cli_keys(command: str) -> dict:
    """Option -> the recipe key that sets it in `hardneg run` (recorded by cli.with_options)."""
    return get_command(app).commands[command].callback.recipe_keys


def test_the_shipped_default_recipe_is_the_generated_one():
    assert default_recipe_path().read_text() == render_default_recipe()


@pytest.mark.parametrize("command", ["mine", "select", "train"])
def test_every_cli_option_is_a_recipe_key(command):
    raw = default_raw()
    for name in cli_params(command):
        if name in FLOW_OPTIONS:
            continue
        assert name in cli_keys(command), f"`hardneg {command}` option {name} has no recipe key"
        section, key = cli_keys(command)[name].split(".")
        assert key in raw[section], cli_keys(command)[name]


@pytest.mark.parametrize("command", ["mine", "select", "train", "eval", "diagnose"])
def test_default_recipe_values_equal_the_cli_defaults(command):
    raw = default_raw()
    for name, param in cli_params(command).items():
        if name not in cli_keys(command) or param.required:
            continue
        section, key = cli_keys(command)[name].split(".")
        hint = recipe_keys(section)[key]  # both read as the option's type, as the CLI and recipe read them
        value, default = (coerce(v, hint, numbers_from_text=True) for v in (raw[section][key], param.default))
        assert value == default, f"{command} --{name}: recipe {value!r} != CLI {default!r}"


def test_default_recipe_builds_the_cli_default_configs():
    config = load_recipe()
    assert config.policy == SelectionPolicy(window=(10, 100), percent=0.95)  # `hardneg mine` without options
    assert config.train == TrainConfig()
    assert (config.mine.retriever, config.mine.depth, config.mine.split) == ("dense", 200, "train")
    assert config.encoder.model is None and config.encoder.batch_size == 64 and config.cache_dir is None
    assert (config.loop.rounds, config.loop.round_init, config.loop.round_gate) == (1, RoundInit.BASE, RoundGate.GAIN)
    assert (config.data.test_split, config.eval.depth, config.fmt) == ("test", 100, None)


# ---- overlays -----------------------------------------------------------------------------
def test_user_recipe_and_overrides_overlay_the_defaults(tmp_path):
    path = write(tmp_path, '[train]\nlr = 1e-4\nmax_steps = 50\n[select]\nwindow = "off"\nsampler = "simans"\n'
                           '[model]\nquery_prompt = "query: "\n')
    config = load_recipe(path, {"train": {"max_steps": 7}, "mine": {"teachers": ["bm25"]}})
    assert config.train.lr == 1e-4 and config.train.max_steps == 7 and config.train.batch_size == 32
    assert config.policy.window is None and config.policy.percent == 0.95 and config.policy.sampler.value == "simans"
    assert config.mine.teachers == ["bm25"]
    assert config.train.query_prompt == "query: "  # training embeds like the model does unless told otherwise


def test_baseline_samplers_drop_default_filters_but_not_explicit_ones(tmp_path):
    config = load_recipe(write(tmp_path, '[select]\nsampler = "none"\n'))
    assert config.policy.window is None and config.policy.percent is None
    with pytest.raises(RecipeError, match=r"my.toml: \[select\] sampler 'random' does not use the candidates"):
        load_recipe(write(tmp_path, '[select]\nsampler = "random"\nwindow = "5:50"\n'))


def test_rank_and_score_by_reach_the_miner(tmp_path):
    config = load_recipe(write(tmp_path, '[mine]\nteachers = ["bm25"]\n[select]\nrank_by = "bm25"\n'))
    assert config.mine.rank_by == "bm25" and config.policy.rank_by == "bm25" and config.mine.score_by is None


def test_dump_reads_back_to_the_same_config(tmp_path):
    path = write(tmp_path, '[select]\nwindow = "5:50"\nmargin = 0.05\npercent = "off"\nformat = "st-ntuple"\n'
                           '[train]\nloss = "gist"\nstudent_range = "-1:1"\neval_steps = 0.5\n'
                           '[loop]\nround_init = "previous"\nrounds = 3\n[data]\npath = "x"\n')
    config = load_recipe(path)
    assert config.train.student_range == (-1.0, 1.0) and config.train.eval_steps == 0.5
    again = load_recipe(write(tmp_path, dump_recipe(config), "again.toml"))
    assert again == config


def test_demo_overrides_are_valid_recipe_keys():
    config = load_recipe(None, demo_overrides("examples/scifact-sample"))
    assert config.train.max_steps and config.train.max_seq_length < TrainConfig().max_seq_length
    assert config.data.path.endswith("scifact-sample")


# ---- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("[train]\nlrr = 1e-4\n", "my.toml: unknown key 'lrr' in section [train] (did you mean 'lr'?"),
    ("[trian]\nlr = 1e-4\n", "my.toml: unknown section [trian]"),
    ("lr = 1e-4\n", "my.toml: unknown top-level key 'lr'"),
    ("[train]\nbatch_size = \"32\"\n", 'my.toml: [train] batch_size: expected an integer, got "32"'),
    ("[train]\nbatch_size = 0\n", "my.toml: [train] batch_size must be positive, not 0"),
    ("[select]\nsampler = \"best\"\n", "my.toml: [select] sampler: expected one of 'top', 'uniform'"),
    ("[select]\nwindow = \"100:10\"\n", "my.toml: [select] window min 100 is greater than max 10"),
    ("[loop]\nround_gate = \"maybe\"\n", "my.toml: [loop] round_gate: expected one of 'gain', 'significant'"),
    ("[train\n", "my.toml: not valid TOML"),
])
def test_bad_recipes_fail_with_file_section_and_key(tmp_path, text, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, text))
    assert message in str(err.value)


def test_overrides_are_checked_too():
    with pytest.raises(RecipeError, match=r"command line: unknown key 'max_step' in section \[train\]"):
        load_recipe(None, parse_override("train.max_step=3"), override_source="command line")
    assert parse_override("train.lr=1e-4") == {"train": {"lr": 1e-4}}
    assert parse_override("select.window=10:50") == {"select": {"window": "10:50"}}  # not TOML: kept as text
    with pytest.raises(RecipeError, match="expected SECTION.KEY=VALUE"):
        parse_override("max_steps=3")


def test_run_cli_reports_an_unknown_key_in_one_line(tmp_path):
    path = write(tmp_path, "[data]\npath = \"x\"\n[train]\nlrr = 1\n")
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"error: {path}: unknown key 'lrr' in section [train]" in result.output
    assert not (tmp_path / "out").exists()


def test_recipe_command_prints_the_default(tmp_path):
    result = runner.invoke(app, ["recipe"])
    assert result.exit_code == 0 and result.output == default_recipe_path().read_text()


def test_demo_recipe_checks_its_data_and_says_what_it_runs(tmp_path):
    with pytest.raises(HardnegError, match="not found; the demo reads the repository's examples/"):
        demo_recipe(tmp_path / "missing")
    config, banner = demo_recipe(tmp_path, {"loop": {"rounds": 2}})
    assert config.data.path == str(tmp_path) and config.loop.rounds == 2
    assert banner == (f"demo: the default recipe on {tmp_path} with smaller settings (passage max length 128, "
                      f"{config.train.max_steps} training steps of 16, 2 re-mining round); full settings: "
                      "`hardneg recipe`")
