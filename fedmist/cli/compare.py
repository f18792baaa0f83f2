"""``fedmist compare``: cells -> table, with a line per finished cell."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from fedmist.attacks.registry import check_attacks, expand_attack_names
from fedmist.audit.pipeline import check_enough_shadows
from fedmist.cli.attack import announce_report, check_options
from fedmist.cli.options import merge_overrides
from fedmist.config import parse_client
from fedmist.data.registry import DATASETS, dataset_names, parse_synthetic
from fedmist.errors import ConfigError, RunDirError
from fedmist.runs.console import console
from fedmist.runs.recipes import find_recipe
from fedmist.studies.cells import as_set_value, check_reuse
from fedmist.studies.compare import (
    CompareSettings,
    aggregate,
    cell_row,
    markdown_table,
    plan_cells,
    run_cells,
    write_table,
)
from fedmist.studies.fl_compare import DEFAULT_ATTACKS, FL_ROWS, fl_compare
from fedmist.studies.frontier import SHADOW_FREE, SHADOWED, run_frontier, write_frontier
from fedmist.studies.tune import tuned_recipe_dir

DEFENSES = "sgd,mist,dpsgd,mixup_mmd,hamp,selena,advreg,dmp,memguard"
ATTACKS = "loss,mentr,lira,rmia"


def compare_command(explicit: dict[str, Any], defenses: str | None, attacks: str | None, shadows: int | None,
                    seeds: str, out: Path, jobs: int, ray_address: str | None, shadow_engine: str, audit_seed: int,
                    bootstrap: int, max_acc_drop: float | None, set_: list[str],
                    shadows_for: list[str] | None = None, force: bool = False) -> list[dict]:
    overrides = {k: as_set_value(v) for k, v in merge_overrides(explicit, set_).items()}
    dataset = overrides.pop("dataset", "location")
    check_dataset_name(dataset)
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if overrides.get("mode") == "fl":
        overrides.pop("mode")
        return _fl_compare(dataset, defenses, attacks, shadows, out, audit_seed, bootstrap, overrides, force)
    shadows = 16 if shadows is None else shadows
    names = expand_attack_names(a.strip() for a in (attacks or ATTACKS).split(",") if a.strip())
    check_options(names, shadows, shadow_engine, bootstrap)
    seed_list = _ints(seeds, "--seeds")
    tuned = None
    if max_acc_drop is not None:
        tuned = tuned_recipe_dir(out, max_acc_drop)
        if not tuned.is_dir():
            raise ConfigError(f"no tuned recipes in {tuned}; run `fedmist tune DEFENSE --dataset {dataset} "
                              f"--max-acc-drop {max_acc_drop:g} --out {out}` for each defense first")
    defense_list = [d.strip() for d in (defenses or DEFENSES).split(",") if d.strip()]
    cells = plan_cells(dataset, defense_list, seed_list, out, tuned, overrides)
    per_defense = _per_defense(shadows_for, defense_list)
    for n in per_defense.values():
        if n:
            check_enough_shadows(names, n)
    request = {"dataset": dataset, "defenses": defense_list, "attacks": names, "seeds": seed_list,
               "shadows": shadows, "shadows_for": per_defense, "audit_seed": audit_seed, "bootstrap": bootstrap,
               "max_acc_drop": max_acc_drop, "overrides": overrides}
    tables = tuned if tuned is not None else out  # matched-utility tables beside their recipes, not over the first
    claim_output(tables / "compare.json", request, force)
    for cell in cells:  # a stale cell stops the comparison before anything trains
        check_reuse(cell.config, cell.run_dir, force)
    settings = CompareSettings(names, shadows, audit_seed, shadow_engine, bootstrap, jobs, ray_address, per_defense,
                               force)
    console.print(f"[bold]fedmist compare[/] {dataset}: {len(cells)} cells ({', '.join(defense_list)} × seeds "
                  f"{seed_list}), attacks {', '.join(names)}, {shadows} shadows, {jobs} at a time"
                  + (f", Ray cluster {ray_address}" if ray_address else "") + f"; logs in {out / 'logs'}")

    def done(cell, res) -> None:
        if isinstance(res, Exception):
            console.print(f"  [red]{cell.name} failed[/]: {res}")
        else:
            console.print(f"  {cell.name}: test {100 * res['test_acc']:.2f} %, highest PLR@0.1% "
                          f"{res['plr_0.1']:.2f} ({res['plr_0.1_attack']}), AUC {res['auc']:.3f}")

    results = run_cells(cells, settings, out / "logs", on_done=done)
    rows = [cell_row(c) for c in cells if not isinstance(results.get(c.name), Exception)]
    failed = [c.name for c in cells if isinstance(results.get(c.name), Exception)]
    if not rows:
        raise ConfigError(f"every cell failed ({', '.join(failed)}); see the logs in {out / 'logs'}")
    table = aggregate(rows)
    untuned = sorted({c.defense for c in cells if tuned is not None and not c.label.startswith("tuned-")})
    recipes = "the paper's / defense papers' defaults"
    if max_acc_drop is not None:
        recipes = f"tuned to a validation-accuracy drop of at most {max_acc_drop:g} points (rows named tuned-*)"
        if untuned:
            recipes += (f"; NOT matched: {', '.join(untuned)} ran their default recipe (no tuned recipe: "
                        "no strength knob fedmist tune can set, or not tuned yet)")
    header = (f"# {dataset}: defenses compared\n\nAttacks: {', '.join(names)}; {shadows} shadows per target "
              f"(audit seed {audit_seed}); seeds {seed_list}; machine: {platform.machine()} "
              f"{platform.processor() or ''} CPU; recipes: {recipes}"
              + ".\nTime ×SGD: training wall time (excluding engine start-up) relative to SGD; paper ratios are "
              "MIST Table 1 (CIFAR-100 AlexNet, GPU). Memory: peak resident memory of the whole simulation "
              "process tree (Ray included), relative to SGD; paper factor = number of models trained.")
    if failed:
        header += f"\n\nFailed cells (see logs): {', '.join(failed)}"
    write_table(table, tables, header)
    console.print(markdown_table(table))
    console.print(f"wrote {tables / 'compare.csv'}, {tables / 'compare.md'}, {tables / 'tradeoff.png'}")
    announce_report(tables)
    if failed:
        raise ConfigError(f"{len(failed)} cell(s) failed: {', '.join(failed)}; the table has the others")
    return table


def frontier_command(explicit: dict[str, Any], defenses: str, points: int, mist_clients: str, seeds: str,
                     shadows: int, bands: str, out: Path, jobs: int, shadow_engine: str, audit_seed: int,
                     bootstrap: int, shadows_for: list[str], set_: list[str], force: bool,
                     recipe_for: list[str] | None = None, values_for: list[str] | None = None,
                     knob_for: list[str] | None = None, tables_only: bool = False) -> list[dict]:
    overrides = {k: as_set_value(v) for k, v in merge_overrides(explicit, set_).items()}
    dataset = overrides.pop("dataset", "location")
    if overrides.get("mode") == "fl":
        raise ConfigError("fedmist frontier compares defenses of one model; --mode fl is compare --mode fl")
    defense_list = [d.strip() for d in defenses.split(",") if d.strip()]
    band_list = _floats(bands, "--bands")
    if any(not b > 0 for b in band_list):
        raise ConfigError(f"--bands must be positive accuracy drops in points, got {bands!r}")
    if points < 2:
        raise ConfigError(f"--points must be >= 2, got {points}")
    seed_list = _ints(seeds, "--seeds")
    per_defense = _per_defense(shadows_for, defense_list)
    recipes = {name: find_recipe(text) for name, text in _pairs(recipe_for, "--recipe-for", "DEFENSE=RECIPE").items()}
    values = {name: _floats(text, f"--values-for {name}")
              for name, text in _pairs(values_for, "--values-for", "DEFENSE=V1,V2,...").items()}
    knobs = _pairs(knob_for, "--knob-for", "DEFENSE=KNOB")
    for n in [shadows, *per_defense.values()]:
        if n:
            check_enough_shadows(SHADOW_FREE + SHADOWED, n)
    settings = CompareSettings(SHADOW_FREE, 0, audit_seed, shadow_engine, bootstrap, jobs, None, per_defense, force)
    request = {"dataset": dataset, "defenses": defense_list, "points": points, "mist_clients": mist_clients,
               "seeds": seed_list, "shadows": shadows, "shadows_for": per_defense, "bands": band_list,
               "audit_seed": audit_seed, "bootstrap": bootstrap, "overrides": overrides}
    if recipes or values:  # only when given, so directories made before these options still match
        request |= {"recipes": {k: str(v) for k, v in recipes.items()}, "values": values}
    if knobs:
        request["knobs"] = knobs
    if not tables_only:  # a look at the cache claims nothing
        claim_output(out / "frontier.json", request, force)
    console.print(f"[bold]fedmist frontier[/] {dataset}: {', '.join(defense_list)} × {points} points, seeds {seed_list}; "
                  f"shadow-free attacks everywhere, {shadows} shadows within {max(band_list):g} points of SGD; "
                  f"logs in {out / 'logs'}")

    skipped: list[str] = []

    def done(cell, res) -> None:
        if res is None:  # --tables-only: not trained and audited yet
            skipped.append(cell.name)
            return
        msg = f"[red]failed[/]: {res}" if isinstance(res, Exception) else \
            f"test {100 * res['test_acc']:.2f} %, highest PLR@0.1% {res['plr_0.1']:.2f}, AUC {res['auc']:.3f}"
        console.print(f"  {cell.name}: {msg}")

    rows, verdict_rows = run_frontier(dataset, defense_list, seed_list, out, points=points,
                                      mist_clients=_ints(mist_clients, "--mist-clients"), shadows=shadows,
                                      bands=band_list, overrides=overrides, settings=settings, recipes=recipes,
                                      values=values, knobs=knobs, on_done=done, tables_only=tables_only)
    shadowed = (f"LiRA and RMIA with {shadows} shadows (per defense: {per_defense or 'none'}) at points within "
                f"{max(band_list):g} points of SGD" if shadows else "no shadow-based attack (--shadows 0)")
    header = (f"# {dataset}: privacy–utility frontier\n\nSeeds {seed_list} (mean); audit seed {audit_seed}; "
              f"shadow-free attacks ({', '.join(SHADOW_FREE)}) at every point, {shadowed}; knob grids "
              f"from each defense's DefenseSpec.tune_knob ({points} values){_sweep_note(recipes, values, knobs)}; "
              f"overrides {overrides or 'none'}; "
              + (f"tables from the cached cells only (--tables-only), {len(skipped)} point(s) not yet run: "
                 f"{', '.join(skipped) or 'none'}; " if tables_only else "")
              + f"machine: {platform.machine()} CPU. sgd-matched-X: SGD on exactly the members defense X keeps.")
    write_frontier(rows, verdict_rows, out, header)
    console.print((out / "matched.md").read_text())
    console.print(f"wrote {out / 'frontier.csv'}, {out / 'frontier.md'}, {out / 'frontier.png'}, {out / 'matched.md'}")
    return rows


def _pairs(items: list[str] | None, option: str, form: str) -> dict[str, str]:
    """``NAME=TEXT`` items of a repeatable option, as a dict (a bad item names the option)."""
    pairs = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ConfigError(f"{option} expects {form}, got {item!r}")
        pairs[name.strip()] = text.strip()
    return pairs


def _sweep_note(recipes: dict[str, Path], values: dict[str, list[float]], knobs: dict[str, str]) -> str:
    """Which curves were swept from another recipe or over chosen values (the header says so)."""
    parts = [f"{d} swept around {r.name}" + ("" if d in values else " (1/4 to 4 times its value)")
             for d, r in recipes.items()]
    parts += [f"{d} at {', '.join(f'{v:g}' for v in vs)} (chosen values)" for d, vs in values.items()]
    parts += [f"{d} swept over {k} (not its main knob)" for d, k in knobs.items()]
    return f"; {'; '.join(parts)}" if parts else ""


def _per_defense(items: list[str] | None, defenses: list[str]) -> dict[str, int]:
    """``--shadows-for DEFENSE=N`` items: a defense of the study, an even count (0: none)."""
    per_defense = {}
    for name, n in _pairs(items, "--shadows-for", "DEFENSE=N").items():
        if not n.isdigit():
            raise ConfigError(f"--shadows-for expects DEFENSE=N, got {name}={n!r}")
        if name not in defenses:
            raise ConfigError(f"--shadows-for {name}={n}: {name!r} is not among the compared defenses "
                              f"({', '.join(defenses)})")
        if int(n) % 2:
            raise ConfigError(f"--shadows-for {name}={n}: the shadow count must be 0 or even, got {n}")
        per_defense[name] = int(n)
    return per_defense


def claim_output(path: Path, request: dict, force: bool) -> None:
    """Record what a study's output directory answers; a different request into it is an error
    (it would overwrite the first one's table and plot) unless ``force``."""
    if path.is_file() and not force:
        before = json.loads(path.read_text())
        differ = [f"{k}: {before.get(k)!r} vs now {v!r}" for k, v in request.items() if before.get(k) != v]
        if differ:
            raise RunDirError(f"{path.parent} holds the tables of another comparison ({'; '.join(differ)}); "
                              "use another --out, or --force to replace them")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(request, indent=2, default=str) + "\n")


def check_dataset_name(name: str) -> None:
    """ConfigError for a dataset name no loader knows, before anything is planned or trained."""
    if parse_synthetic(name) is None and name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")


def _floats(text: str, option: str) -> list[float]:
    return _numbers(text, option, float, "numbers")


def _ints(text: str, option: str) -> list[int]:
    return _numbers(text, option, int, "integers")


def _numbers(text: str, option: str, kind: type, what: str) -> list:
    try:
        values = [kind(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"{option} expects comma-separated {what}, got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} is empty")
    return values


def _fl_compare(dataset: str, defenses: str | None, attacks: str | None, shadows: int | None, out: Path,
                audit_seed: int, bootstrap: int, overrides: dict[str, str], force: bool) -> list[dict]:
    """``--mode fl``: fedmist.studies.fl_compare, with its own default rows and attacks."""
    names = expand_attack_names(a.strip() for a in (attacks or DEFAULT_ATTACKS).split(",") if a.strip())
    check_attacks(names)
    client = parse_client(overrides.pop("threat_client", "client:0"), int(overrides.get("clients", 10)), "threat_client")
    overrides.setdefault("clients", "10")
    rows = [d.strip() for d in (defenses or ",".join(FL_ROWS)).split(",") if d.strip()]
    claim_output(out / "compare-fl.json", {"dataset": dataset, "rows": rows, "attacks": names, "shadows": shadows,
                                            "audit_seed": audit_seed, "bootstrap": bootstrap,
                                            "overrides": overrides, "client": client}, force)
    console.print(f"[bold]fedmist compare --mode fl[/] {dataset}: {', '.join(rows)}; threats server, "
                  f"client:{client}, outsider; logs in {out / 'logs'}")
    table = fl_compare(dataset, rows, overrides, out, ",".join(names), 0 if shadows is None else shadows,
                       audit_seed, bootstrap, client, force)
    announce_report(out)
    return table
