"""Command-line options generated from ``RunConfig``'s field declarations, and the one rule that
turns a command line into a config.

Precedence, lowest to highest: built-in defaults < ``--recipe`` < ``--set KEY=VALUE`` < an explicit
option (``--epochs 3``). An explicit option and a ``--set`` of the same field with different values
is an error, never a silent choice. ``--resume`` with an existing run directory starts from that
run's saved ``config.json`` instead of a recipe.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import typer

from fedmist.config import (
    RunConfig,
    coerce,
    config_fields,
    default_of,
    display_name,
    normalize_key,
    parse_sets,
)
from fedmist.errors import ConfigError
from fedmist.runs.recipes import default_recipe

PREFIX = "cfg__"  # python names of the generated parameters, apart from a command's own


def option_name(field_name: str) -> str:
    """``batch_size`` -> ``--batch-size``, ``lam`` -> ``--lambda``."""
    return "--" + display_name(field_name).replace("_", "-")


def config_parameters(cls: type = RunConfig, exclude: Iterable[str] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per option field, default None (= not given), typed for typer."""
    params = []
    for f in config_fields(cls, option=True):
        if f.name in exclude:
            continue
        default = default_of(f)
        help_text = f"{f.metadata['help']} [recipe default: {default!r}]" if f.metadata["help"] else None
        names = [option_name(f.name)]
        if isinstance(default, bool):
            names = [f"{option_name(f.name)}/--no-{option_name(f.name)[2:]}"]
            kind: Any = Optional[bool]
        elif isinstance(default, list):
            kind = Optional[str]
        else:
            kind = Optional[type(default)]
        info = typer.Option(None, *names, help=help_text, rich_help_panel=f"Config: {f.metadata['group']}",
                            show_default=False)
        params.append(inspect.Parameter(PREFIX + f.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                        annotation=kind))
    return params


def with_config_options(exclude: Iterable[str] = (), cls: type = RunConfig) -> Callable:
    """Decorator: ``command(..., explicit: dict)`` gains every config field as an option; the values
    a user gave arrive in ``explicit`` (field name -> value), the rest stay unset."""
    exclude = tuple(exclude)

    def wrap(func: Callable) -> Callable:
        own = [p for p in inspect.signature(func).parameters.values() if p.name != "explicit"]
        extra = config_parameters(cls, exclude)

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            explicit = {k[len(PREFIX):]: v for k, v in kwargs.items() if k.startswith(PREFIX) and v is not None}
            return func(**{k: v for k, v in kwargs.items() if not k.startswith(PREFIX)}, explicit=explicit)

        command.__signature__ = inspect.Signature(own + extra)  # type: ignore[attr-defined]
        command.__annotations__ = {**{p.name: p.annotation for p in own + extra}}
        return command
    return wrap


def merge_overrides(explicit: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """``--set`` items under explicit options; a field given both ways with different values is an error."""
    overrides = {normalize_key(k): v for k, v in parse_sets(sets).items()}
    fields = {f.name: f for f in config_fields(RunConfig)}
    for key, value in explicit.items():
        if key in overrides and key in fields:
            set_value = coerce(f"--set {display_name(key)}", default_of(fields[key]), overrides[key])
            if set_value != coerce(option_name(key), default_of(fields[key]), value):
                raise ConfigError(f"{option_name(key)} {value} conflicts with --set {display_name(key)}="
                                  f"{overrides[key]}; give one of them")
    return {**overrides, **explicit}


def choose_recipe(recipe: Path | None, overrides: dict[str, Any]) -> Path | None:
    """``--recipe`` if given, else the shipped recipe of the requested dataset and defense."""
    if recipe is not None:
        return recipe
    return default_recipe(str(overrides.get("dataset", "location")), str(overrides.get("defense", "mist")),
                          str(overrides.get("model", "")))


def build_config(explicit: dict[str, Any], sets: list[str], recipe: Path | None = None, *,
                 resume_from: Path | None = None) -> tuple[RunConfig, Path | None]:
    """The config a command line asks for, and the recipe it came from (None: a saved run or the
    built-in defaults). See the module docstring for the precedence."""
    overrides = merge_overrides(explicit, sets)
    saved = resume_from / "config.json" if resume_from is not None else None
    if saved is not None and saved.is_file():
        if recipe is not None:
            raise ConfigError(f"--resume continues {resume_from} from its config.json; drop --recipe")
        base, source = RunConfig.from_dict(json.loads(saved.read_text())), None
    else:
        source = choose_recipe(recipe, overrides)
        base = RunConfig.from_toml(source) if source is not None else RunConfig()
    return RunConfig.from_dict(overrides, base=base), source
