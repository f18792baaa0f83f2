"""A config field is declared once (``fedmist.config.setting``): the CLI options, Flower's
run-config keys, the resume check, the recipes ``fedmist tune`` writes and the shadow-cache key all
follow from the declaration. The test adds a field to a subclass and edits nothing else."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import numpy as np
import typer
from typer.testing import CliRunner

from fedmist.audit.shadows import cache_key
from fedmist.cli.options import build_config, config_parameters, merge_overrides, with_config_options
from fedmist.config import RunConfig, flwr_keys, non_training_keys, setting, training_differences
from fedmist.studies.tune import write_recipe
from server.app import APP_KEYS

ROOT = Path(__file__).resolve().parents[1]


def _extended(**metadata) -> type:
    """RunConfig plus one new field, declared the one way fields are declared."""
    return dataclasses.make_dataclass(
        "Extended", [("new_knob", float, setting(0.5, "a knob added tomorrow", **metadata))], bases=(RunConfig,))


def test_a_new_field_becomes_an_option_with_its_help() -> None:
    cls = _extended()
    app = typer.Typer()

    @app.command()
    @with_config_options(cls=cls)
    def cmd(explicit: dict | None = None) -> None:
        print(explicit)

    result = CliRunner().invoke(app, ["--new-knob", "0.75", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert "'new_knob': 0.75" in result.output and "'epochs': 3" in result.output
    helped = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--new-knob" in helped.output and "a knob added tomorrow" in helped.output
    assert "--new-knob" not in {p.default.param_decls[0] for p in config_parameters(RunConfig)}


def test_a_new_field_takes_part_in_the_resume_check_unless_declared_non_training() -> None:
    cls = _extended()
    saved = RunConfig().to_dict()  # a run directory written before the field existed
    assert training_differences(saved, cls()) == []  # its default: the old run resumes
    assert training_differences(saved, cls(new_knob=0.7)) == ["new_knob: saved 0.5 vs now 0.7"]
    placement = _extended(trains=False)
    assert "new_knob" in non_training_keys(placement) and "new_knob" not in non_training_keys(cls)
    assert training_differences(saved, placement(new_knob=0.7)) == []


def test_a_param_given_on_the_command_line_is_the_same_run_as_the_recipes_number() -> None:
    """`--set params.temperature=1` stores "1"; the preset stores 1.0: the same run, reused."""
    recipe = RunConfig(defense="dmp", params={"temperature": 1.0, "synthetic_rows": 10000, "select_fraction": 1.0})
    saved = recipe.to_dict()
    cli = RunConfig(defense="dmp", params={"temperature": "1", "synthetic_rows": "10000", "select_fraction": "1.0"})
    assert training_differences(saved, cli) == []
    other = RunConfig(defense="dmp", params={"temperature": "2", "synthetic_rows": "10000", "select_fraction": "1.0"})
    assert training_differences(saved, other) == [
        "params: saved {'temperature': 1.0, 'synthetic_rows': 10000, 'select_fraction': 1.0} vs now "
        "{'temperature': '2', 'synthetic_rows': '10000', 'select_fraction': '1.0'}"]
    flags = RunConfig(defense="mixup_mmd", params={"separate": "true"})
    assert training_differences(RunConfig(defense="mixup_mmd", params={"separate": True}).to_dict(), flags) == []
    assert training_differences(RunConfig(defense="mixup_mmd", params={"separate": False}).to_dict(), flags) != []


def test_a_new_field_keys_the_shadow_cache_only_away_from_its_default() -> None:
    cls = _extended()
    idx = np.arange(5)
    old = RunConfig().to_dict()
    assert cache_key({**old, "new_knob": 0.5}, 0, 4, idx, config_cls=cls) == cache_key(old, 0, 4, idx)
    assert cache_key({**old, "new_knob": 0.9}, 0, 4, idx, config_cls=cls) != cache_key(old, 0, 4, idx)
    assert cache_key({**old, "device": "cuda", "data_dir": "/x"}, 0, 4, idx) == cache_key(old, 0, 4, idx)


def test_a_new_field_is_written_into_tuned_recipes_and_read_back(tmp_path: Path) -> None:
    cls = _extended()
    write_recipe(cls(new_knob=0.25, seed=7, device="cuda"), tmp_path / "r.toml", "tuned")
    table = tomllib.loads((tmp_path / "r.toml").read_text())
    assert table["new_knob"] == 0.25 and "seed" not in table and "device" not in table
    assert cls.from_toml(tmp_path / "r.toml").new_knob == 0.25


def test_flowers_run_config_lists_exactly_the_declared_keys() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert set(pyproject) == set(flwr_keys()) | APP_KEYS
    assert "new-knob" in flwr_keys(_extended(flwr=True)) and "new-knob" not in flwr_keys(_extended())


def test_precedence_explicit_over_set_over_recipe_over_defaults(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('dataset = "texas"\ndefense = "mist"\nepochs = 7\nlr = 0.05\nbatch_size = 64\n')
    cfg, source = build_config({"epochs": 2}, ["lr=0.2", "epochs=2"], recipe)
    assert source == recipe
    assert (cfg.dataset, cfg.epochs, cfg.lr, cfg.batch_size, cfg.momentum) == ("texas", 2, 0.2, 64, 0.9)
    import pytest

    from fedmist.errors import ConfigError
    with pytest.raises(ConfigError, match="--epochs 1 conflicts with --set epochs=2"):
        merge_overrides({"epochs": 1}, ["epochs=2"])
    with pytest.raises(ConfigError, match="--lambda 3.0 conflicts with --set lambda=4"):
        merge_overrides({"lam": 3.0}, ["lambda=4"])


def test_the_defense_option_lists_every_registered_defense() -> None:
    import dataclasses as dc

    from fedmist.defenses import DEFENSES
    help_text = next(f for f in dc.fields(RunConfig) if f.name == "defense").metadata["help"]
    assert all(name in help_text for name in DEFENSES)
