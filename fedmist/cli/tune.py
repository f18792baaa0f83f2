"""``fedmist tune``: trials as ``fedmist simulate`` runs on a validation split, then a recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedmist.cli.compare import check_dataset_name
from fedmist.cli.options import merge_overrides
from fedmist.config import RunConfig
from fedmist.defenses import get_defense
from fedmist.errors import ConfigError, require_finite
from fedmist.runs.console import console
from fedmist.runs.recipes import default_recipe
from fedmist.runs.rundir import prepare_config
from fedmist.studies.cells import as_set_value, train_once
from fedmist.studies.tune import (
    bisect_strongest,
    plot_trials,
    tuned_recipe_dir,
    write_recipe,
)


def tune_command(defense: str, explicit: dict[str, Any], max_acc_drop: float, out: Path, iterations: int,
                 validation_fraction: float, set_: list[str]) -> dict:
    spec = get_defense(defense)
    if spec.tune_knob is None:
        raise ConfigError(f"defense {defense!r} has no strength knob to tune")
    require_finite("--max-acc-drop", max_acc_drop, positive=True, must="a positive number of points")
    if iterations < 1:
        raise ConfigError(f"--iterations must be >= 1, got {iterations}")
    explicit = dict(explicit)
    if not 0 < validation_fraction < 0.5:
        raise ConfigError(f"--validation-fraction must be in (0, 0.5), got {validation_fraction}")
    overrides = {k: as_set_value(v) for k, v in merge_overrides(explicit, set_).items()}
    dataset = overrides.pop("dataset", "location")
    check_dataset_name(dataset)
    seed = int(overrides.pop("seed", 0))
    for name in ("sgd", defense):  # every trial's config is checked before the first one trains
        recipe = default_recipe(dataset, name)
        prepare_config(RunConfig.from_dict({"dataset": dataset, "defense": name, "seed": str(seed),
                                            "validation_fraction": str(validation_fraction), **overrides},
                                           base=RunConfig.from_toml(recipe) if recipe else RunConfig()))
    knob = spec.tune_knob
    base_dir = out / "tune" / f"{dataset.replace(':', '-')}-{defense}"
    base_dir.mkdir(parents=True, exist_ok=True)
    log = base_dir / "trials.log"
    trials: list[dict] = []

    def trial(defense_name: str, values: dict[str, str], name: str) -> float:
        recipe = default_recipe(dataset, defense_name)
        run_dir = base_dir / name
        common = {"validation_fraction": str(validation_fraction), **overrides, **values}
        sets = {"dataset": dataset, "defense": defense_name, "seed": str(seed), **common}
        cfg = prepare_config(RunConfig.from_dict(sets, base=RunConfig.from_toml(recipe) if recipe else RunConfig()))
        train_once(cfg, sets, recipe, run_dir, log)  # a trial directory of another config is refused
        acc = json.loads((run_dir / "metrics.json").read_text())["summary"]["test_acc"]  # = validation rows
        console.print(f"  {defense_name} {values or ''}: validation accuracy {100 * acc:.2f} %")
        return acc

    console.print(f"[bold]fedmist tune[/] {defense} on {dataset}: largest {knob.key} with validation accuracy "
                  f"within {max_acc_drop:g} points of SGD's ({validation_fraction:.0%} of the training pool held "
                  f"out); trials in {base_dir}")
    baseline = trial("sgd", {}, "sgd")
    chosen: dict[str, str] = {}
    if spec.tune_clients:
        accs = {c: trial(defense, {"clients": str(c), knob.key: str(knob.lo)}, f"c{c}-{knob.key}={knob.lo:g}")
                for c in spec.tune_clients}
        trials += [{"knob": "clients", "value": c, "val_acc": a} for c, a in accs.items()]
        best_c = max(accs, key=lambda c: (accs[c], -c))
        chosen["clients"] = str(best_c)
        console.print(f"  C = {best_c} (highest validation accuracy at {knob.key} = {knob.lo:g})")

    def ok(value: float) -> bool:
        v = f"{value:.6g}"
        acc = trial(defense, {**chosen, knob.key: v}, f"{'c' + chosen['clients'] + '-' if chosen else ''}{knob.key}={v}")
        trials.append({"knob": knob.key, "value": float(v), "val_acc": acc})
        return 100 * (baseline - acc) <= max_acc_drop

    value, found = bisect_strongest(knob, ok, iterations)
    chosen[knob.key] = f"{value:.6g}"
    recipe = default_recipe(dataset, defense)
    cfg = RunConfig.from_dict({"dataset": dataset, "defense": defense, **overrides, **chosen},
                              base=RunConfig.from_toml(recipe) if recipe else RunConfig())
    path = tuned_recipe_dir(out, max_acc_drop) / f"{dataset.replace(':', '-')}-{defense}.toml"
    note = "" if found else f"\nWARNING: even {knob.key} = {knob.lo:g} loses more than {max_acc_drop:g} points."
    write_recipe(cfg, path, f"fedmist tune {defense} --dataset {dataset} --max-acc-drop {max_acc_drop:g}: "
                 f"{', '.join(f'{k} = {v}' for k, v in chosen.items())}; SGD validation accuracy "
                 f"{100 * baseline:.2f} %, {validation_fraction:.0%} of the training pool held out, seed {seed}.{note}")
    result = {"defense": defense, "dataset": dataset, "max_acc_drop": max_acc_drop, "sgd_val_acc": baseline,
              "chosen": chosen, "within_budget": found, "trials": trials, "recipe": str(path)}
    (base_dir / "tune.json").write_text(json.dumps(result, indent=2))
    plot_trials(trials, baseline, max_acc_drop, knob.key, base_dir / "tune.png")
    msg = "" if found else f" [red](no value within {max_acc_drop:g} points; weakest tried)[/]"
    console.print(f"chose {', '.join(f'{k} = {v}' for k, v in chosen.items())}{msg}; recipe {path}; "
                  f"plot {base_dir / 'tune.png'}")
    return result
