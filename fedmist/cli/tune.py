"""``fedmist tune``: trials as ``fedmist simulate`` runs on a validation split, then a recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedmist.cli.compare import _ints, check_dataset_name
from fedmist.cli.options import merge_overrides
from fedmist.config import RunConfig
from fedmist.defenses import Knob, get_defense
from fedmist.errors import ConfigError, require_finite
from fedmist.runs.console import console
from fedmist.runs.recipes import default_recipe
from fedmist.runs.rundir import prepare_config, split_for
from fedmist.studies.cells import as_set_value, train_once
from fedmist.studies.tune import (
    bisect_strongest,
    plot_trials,
    tuned_recipe_dir,
    write_recipe,
)


def tune_command(defense: str, explicit: dict[str, Any], max_acc_drop: float, out: Path, iterations: int,
                 validation_fraction: float, set_: list[str], seeds: str = "0,1,2", folds: int = 1,
                 min_validation_rows: int = 1000) -> dict:
    """Every trial is the mean validation accuracy over ``seeds`` × ``folds`` runs; the baseline is
    SGD on exactly the members the defense keeps (its hold-out removed), so the budget measures the
    defense's own cost."""
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
    seed_list = _ints(seeds, "--seeds")
    taken = [k for k in ("seed", "validation_fraction", "validation_fold") if k in overrides]
    if taken:
        raise ConfigError(f"fedmist tune sets {', '.join(taken)} itself: use --seeds, --validation-fraction, --folds")
    if folds < 1 or folds * validation_fraction >= 1:
        raise ConfigError(f"--folds must be >= 1 with folds × validation fraction < 1, got {folds} × {validation_fraction}")

    def config(name: str, values: dict[str, str], seed: int = 0, fold: int = 0) -> tuple[RunConfig, dict, Path | None]:
        recipe = default_recipe(dataset, name)
        sets = {"dataset": dataset, "defense": name, "seed": str(seed), "validation_fraction": str(validation_fraction),
                "validation_fold": str(fold), **overrides, **values}
        return prepare_config(RunConfig.from_dict(sets, base=RunConfig.from_toml(recipe) if recipe else RunConfig())), \
            sets, recipe

    held_out = len(split_for(config(defense, {})[0]).reference)  # rows the defense keeps out of training
    matched = {"reference_size": str(held_out)} if held_out else {}
    validation_rows = len(split_for(config("sgd", matched)[0]).test)  # every config checked before anything trains
    if validation_rows * folds < min_validation_rows:
        raise ConfigError(f"a trial would score {validation_rows * folds} validation rows ({folds} fold(s) of "
                          f"{validation_rows}), so 1 point is {validation_rows * folds / 100:g} rows; use --folds, "
                          f"a larger --validation-fraction, or --min-validation-rows (default 1000)")
    knob = spec.tune_knob
    base_dir = out / "tune" / f"{dataset.replace(':', '-')}-{defense}"
    base_dir.mkdir(parents=True, exist_ok=True)
    log = base_dir / "trials.log"
    trials: list[dict] = []

    def trial(defense_name: str, values: dict[str, str], name: str) -> float:
        accs = []
        for seed in seed_list:
            for fold in range(folds):
                cfg, sets, recipe = config(defense_name, values, seed, fold)
                run_dir = base_dir / f"{name}-s{seed}-f{fold}"
                train_once(cfg, sets, recipe, run_dir, log)  # a trial directory of another config is refused
                accs.append(json.loads((run_dir / "metrics.json").read_text())["summary"]["test_acc"])  # validation
        acc = float(np.mean(accs))
        console.print(f"  {defense_name} {values or ''}: validation accuracy {100 * acc:.2f} % "
                      f"(mean of {len(accs)}: seeds {seed_list} × {folds} fold(s), ± {100 * float(np.std(accs)):.2f})")
        return acc

    console.print(f"[bold]fedmist tune[/] {defense} on {dataset}: largest {knob.key} with validation accuracy "
                  f"within {max_acc_drop:g} points of SGD's ({validation_fraction:.0%} of the training pool held "
                  f"out, {validation_rows} rows × {folds} fold(s), seeds {seed_list}"
                  + (f"; SGD on the same members, {held_out} rows held out as {defense}'s" if held_out else "")
                  + f"); trials in {base_dir}")
    baseline = trial("sgd", matched, "sgd-matched" if held_out else "sgd")
    chosen: dict[str, str] = {}
    if spec.tune_clients:
        accs = {c: trial(defense, {"clients": str(c), knob.key: str(knob.lo)}, f"c{c}-{knob.key}={knob.lo:g}")
                for c in spec.tune_clients}
        trials += [{"knob": "clients", "value": c, "val_acc": a} for c, a in accs.items()]
        best_c = max(accs, key=lambda c: (accs[c], -c))
        chosen["clients"] = str(best_c)
        console.print(f"  C = {best_c} (highest validation accuracy at {knob.key} = {knob.lo:g})")

    def searched(knob: Knob) -> tuple[float, bool]:
        """Bisect one knob with the values chosen so far fixed (a coordinate search)."""
        def ok(value: float) -> bool:
            v = f"{value:.6g}"
            prefix = "-".join(f"c{v}" if k == "clients" else f"{k}={v}" for k, v in chosen.items())
            acc = trial(defense, {**chosen, knob.key: v}, f"{prefix + '-' if prefix else ''}{knob.key}={v}")
            trials.append({"knob": knob.key, "value": float(v), "val_acc": acc})
            return 100 * (baseline - acc) <= max_acc_drop
        return bisect_strongest(knob, ok, iterations)

    value, found = searched(knob)
    chosen[knob.key] = f"{value:.6g}"
    for more in spec.tune_more:  # e.g. HAMP's label entropy after its reward weight
        more_value, more_found = searched(more)
        if more_found:
            chosen[more.key] = f"{more_value:.6g}"
        else:
            console.print(f"  {more.key}: even {more.lo:g} loses more than {max_acc_drop:g} points at "
                          f"{knob.key} = {chosen[knob.key]}; the recipe's value is kept")
    recipe = default_recipe(dataset, defense)
    cfg = RunConfig.from_dict({"dataset": dataset, "defense": defense, **overrides, **chosen},
                              base=RunConfig.from_toml(recipe) if recipe else RunConfig())
    path = tuned_recipe_dir(out, max_acc_drop) / f"{dataset.replace(':', '-')}-{defense}.toml"
    note = "" if found else f"\nWARNING: even {knob.key} = {knob.lo:g} loses more than {max_acc_drop:g} points."
    write_recipe(cfg, path, f"fedmist tune {defense} --dataset {dataset} --max-acc-drop {max_acc_drop:g}: "
                 f"{', '.join(f'{k} = {v}' for k, v in chosen.items())}; SGD validation accuracy "
                 f"{100 * baseline:.2f} %, {validation_fraction:.0%} of the training pool held out, {folds} fold(s), "
                 f"seeds {seed_list}.{note}")
    result = {"defense": defense, "dataset": dataset, "max_acc_drop": max_acc_drop, "sgd_val_acc": baseline,
              "chosen": chosen, "within_budget": found, "trials": trials, "recipe": str(path)}
    (base_dir / "tune.json").write_text(json.dumps(result, indent=2))
    plot_trials(trials, baseline, max_acc_drop, knob.key, base_dir / "tune.png")
    for more in spec.tune_more:
        plot_trials(trials, baseline, max_acc_drop, more.key, base_dir / f"tune-{more.key.split('.')[-1]}.png")
    msg = "" if found else f" [red](no value within {max_acc_drop:g} points; weakest tried)[/]"
    console.print(f"chose {', '.join(f'{k} = {v}' for k, v in chosen.items())}{msg}; recipe {path}; "
                  f"plot {base_dir / 'tune.png'}")
    return result
