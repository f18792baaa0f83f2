"""``fedmist compare``: cells -> table, with a line per finished cell."""

from __future__ import annotations

import platform
from pathlib import Path

from fedmist.console import console
from fedmist.config import parse_sets
from fedmist.errors import ConfigError


def compare_command(dataset: str, defenses: str, attacks: str, shadows: int, seeds: str, out: Path, jobs: int,
                    ray_address: str | None, shadow_engine: str, audit_seed: int, bootstrap: int,
                    max_acc_drop: float | None, set_: list[str], shadows_for: list[str] | None = None,
                    mode: str = "virtual") -> list[dict]:
    if mode == "fl":
        return _fl_compare(dataset, defenses, attacks, shadows, out, audit_seed, bootstrap, set_)
    if mode != "virtual":
        raise ConfigError(f"--mode must be virtual or fl, got {mode!r}")
    shadows = 16 if shadows is None else shadows
    from fedmist.attacks.registry import check_attacks, expand_attack_names
    from fedmist.compare import (CompareSettings, aggregate, cell_row, markdown_table, plan_cells, run_cells,
                                 write_table)
    from fedmist.tune import tuned_recipe_dir

    names = expand_attack_names(a.strip() for a in attacks.split(",") if a.strip())
    check_attacks(names)
    seed_list = _ints(seeds, "--seeds")
    overrides = parse_sets(set_)
    tuned = None
    if max_acc_drop is not None:
        tuned = tuned_recipe_dir(out, max_acc_drop)
        if not tuned.is_dir():
            raise ConfigError(f"no tuned recipes in {tuned}; run `fedmist tune DEFENSE --dataset {dataset} "
                              f"--max-acc-drop {max_acc_drop:g} --out {out}` for each defense first")
    defense_list = [d.strip() for d in defenses.split(",") if d.strip()]
    cells = plan_cells(dataset, defense_list, seed_list, out, tuned, overrides)
    per_defense = {}
    for item in shadows_for or []:
        name, _, n = item.partition("=")
        if not n.isdigit():
            raise ConfigError(f"--shadows-for expects DEFENSE=N, got {item!r}")
        per_defense[name.strip()] = int(n)
    settings = CompareSettings(names, shadows, audit_seed, shadow_engine, bootstrap, jobs, ray_address, per_defense)
    out.mkdir(parents=True, exist_ok=True)
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
    header = (f"# {dataset}: defenses compared\n\nAttacks: {', '.join(names)}; {shadows} shadows per target "
              f"(audit seed {audit_seed}); seeds {seed_list}; machine: {platform.machine()} "
              f"{platform.processor() or ''} CPU; recipes: " + ("tuned to a test-accuracy drop of at most "
              f"{max_acc_drop:g} points" if max_acc_drop is not None else "the paper's / defense papers' defaults")
              + ".\nTime ×SGD: training wall time (excluding engine start-up) relative to SGD; paper ratios are "
              "MIST Table 1 (CIFAR-100 AlexNet, GPU). Memory: peak resident memory of the whole simulation "
              "process tree (Ray included), relative to SGD; paper factor = number of models trained.")
    if failed:
        header += f"\n\nFailed cells (see logs): {', '.join(failed)}"
    write_table(table, out, header)
    console.print(markdown_table(table))
    console.print(f"wrote {out / 'compare.csv'}, {out / 'compare.md'}, {out / 'tradeoff.png'}")
    if failed:
        raise ConfigError(f"{len(failed)} cell(s) failed: {', '.join(failed)}; the table has the others")
    return table


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"{option} expects comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} is empty")
    return values


def _fl_compare(dataset: str, defenses: str, attacks: str, shadows: int | None, out: Path, audit_seed: int,
                bootstrap: int, set_: list[str]) -> list[dict]:
    """``--mode fl``: fedmist.fl_compare (the virtual-mode defaults become the FL ones)."""
    from fedmist.attacks.registry import check_attacks, expand_attack_names
    from fedmist.fl.checks import parse_client
    from fedmist.fl_compare import DEFAULT_ATTACKS, FL_ROWS, fl_compare

    if defenses == "sgd,mist,dpsgd,mixup_mmd,hamp,selena,advreg,dmp,memguard":  # the CLI default
        defenses = ",".join(FL_ROWS)
    if attacks == "loss,mentr,lira,rmia":
        attacks = DEFAULT_ATTACKS
    names = expand_attack_names(a.strip() for a in attacks.split(",") if a.strip())
    check_attacks(names)
    overrides = parse_sets(set_)
    client = parse_client(overrides.pop("threat_client", "client:0"), int(overrides.get("clients", 10)), "threat_client")
    overrides.setdefault("clients", "10")
    console.print(f"[bold]fedmist compare --mode fl[/] {dataset}: {defenses}; threats server, client:{client}, "
                  f"outsider; logs in {out / 'logs'}")
    return fl_compare(dataset, [d.strip() for d in defenses.split(",") if d.strip()], overrides, out,
                      ",".join(names), 0 if shadows is None else shadows, audit_seed, bootstrap, client)
