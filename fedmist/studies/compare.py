"""``fedmist compare``: train and audit every defense on one dataset and put them side by side.

A *cell* is one (dataset, defense, seed): a run directory trained with ``fedmist simulate`` and
audited with ``fedmist attack``. Cells run as those same CLI commands in subprocesses, so every
number in the table can be reproduced by hand from its log line, a finished cell is never redone
(the run directory and its audit.json are the cache), an interrupted one resumes, and independent
cells run concurrently (``--jobs``) or on an existing Ray cluster (``--ray-address``: every
simulation of every cell joins it) without a scheduler of our own.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fedmist.config import RunConfig
from fedmist.defenses import DEFENSES
from fedmist.errors import ConfigError, FedmistError
from fedmist.runs.recipes import default_recipe
from fedmist.runs.rundir import prepare_config
from fedmist.runs.shadows import available_cores
from fedmist.studies.cells import audit_is_current, run_fedmist, train_once

# MIST paper Table 1 (CIFAR-100 / AlexNet on a GTX-1080Ti): running time relative to SGD, and
# memory as the number of models trained.
PAPER_TIME_RATIO = {"sgd": 1.0, "advreg": 7008 / 1195, "dmp": 2543 / 1195, "memguard": 36373 / 1195,
                    "selena": 20320 / 1195, "mixup_mmd": 3154 / 1195, "hamp": 1280 / 1195, "mist": 2139 / 1195}
# MIST paper (Table 2 / Figure 1): the highest PLR@0.1 % FPR over its attacks, undefended and MIST.
PAPER_HIGHEST_PLR = {"location": {"sgd": 2.89, "mist": 1.15}, "purchase": {"sgd": 6.51, "mist": 4.10},
                     "texas": {"sgd": 1.55, "mist": 1.08}}
PAPER_MEMORY_FACTOR = {"sgd": 1, "advreg": 1, "dmp": 2, "memguard": 1, "selena": 26, "mixup_mmd": 1, "hamp": 1,
                       "mist": 4}


@dataclass
class Cell:
    """One defense on one dataset and seed, with the recipe and overrides it trains with."""

    dataset: str
    defense: str
    seed: int
    run_dir: Path
    recipe: Path | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    label: str = ""  # row name when it is not the defense's (an ablation variant, e.g. "mist-kl")
    config: RunConfig = field(default_factory=RunConfig)  # what the cell's run must hold (checked on reuse)

    @property
    def sets(self) -> dict[str, str]:
        """The ``--set`` items that, on top of ``recipe``, build ``config``."""
        return {"dataset": self.dataset, "defense": self.defense, "seed": str(self.seed), **self.overrides}

    @property
    def name(self) -> str:
        return f"{self.label or self.defense}-s{self.seed}"


@dataclass
class CompareSettings:
    attacks: list[str]
    shadows: int
    audit_seed: int = 0
    shadow_engine: str = "parallel"
    bootstrap: int = 200
    jobs: int = 1
    ray_address: str | None = None
    shadows_for: dict[str, int] = field(default_factory=dict)  # per-defense override (SELENA is costly)
    force: bool = False  # replace runs and audits made with another config

    def n_shadows(self, defense: str) -> int:
        return self.shadows_for.get(defense, self.shadows)


# --- running cells ------------------------------------------------------------------------------
def run_cell(cell: Cell, settings: CompareSettings, log_dir: Path) -> dict:
    """Train (or resume, or reuse) the cell's run, audit it (reusing cached shadows), and return
    its row. Cost figures are written to ``cost.json`` in the run directory the first time the
    cell trains, so a reused cell keeps the cost of the run that made it."""
    log = log_dir / f"{cell.dataset.replace(':', '-')}-{cell.name}.log"
    cost = train_once(cell.config, cell.sets, cell.recipe, cell.run_dir, log, settings.ray_address, settings.force)
    if cost is not None:
        (cell.run_dir / "cost.json").write_text(json.dumps(cost, indent=2))
    wanted = {"seed": settings.audit_seed, "bootstrap": settings.bootstrap}
    if settings.n_shadows(cell.defense):  # shadow-free attacks read the same from any shadow count
        wanted["n_shadows"] = settings.n_shadows(cell.defense)
    if not audit_is_current(cell.run_dir / "audit.json", cell.run_dir / "model.pt", wanted, settings.attacks,
                            settings.force):
        run_fedmist(["attack", str(cell.run_dir), "--attacks", ",".join(settings.attacks), "--shadows",
                     str(settings.n_shadows(cell.defense)), "--audit-seed", str(settings.audit_seed),
                     "--shadow-engine", settings.shadow_engine, "--bootstrap", str(settings.bootstrap)],
                    log, settings.ray_address, shadow_workers=_workers_per_cell(settings.jobs))
    return cell_row(cell)


def cell_row(cell: Cell) -> dict:
    """A cell's numbers from its run directory (metrics.json, audit.json, cost.json)."""
    metrics = json.loads((cell.run_dir / "metrics.json").read_text())["summary"]
    audit = json.loads((cell.run_dir / "audit.json").read_text())
    cost_file = cell.run_dir / "cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
    row = {"defense": cell.label or cell.defense, "seed": cell.seed, "test_acc": metrics["test_acc"],
           "train_acc": metrics["train_acc"], "train_seconds": metrics["wall_time"],
           "peak_rss_mb": cost.get("peak_rss_mb", float("nan")),
           "epsilon": dp_epsilon(metrics.get("defense", {})),
           "n_shadows": audit["audit"]["n_shadows"], "run_dir": str(cell.run_dir)}
    row.update(highest_over_attacks(audit))
    return row


def dp_epsilon(defense_metrics: dict) -> float:
    """The differential-privacy ε of a run (reported with its δ), NaN for defenses without one;
    runs of MemGuard before it named its L1 budget ``l1_budget`` reported it as ``epsilon``."""
    return float(defense_metrics["epsilon"]) if "delta" in defense_metrics else float("nan")


def highest_over_attacks(audit: dict) -> dict:
    """The paper's headline numbers from an audit.json: the highest PLR at 0.1 % and at 1 % FPR
    over all attacks (and which attack), and the highest AUC.

    >>> a = {"attacks": {"x": {"full": {"auc": 0.6, "at_fpr": {"0.001": {"plr": 3.0}, "0.01": {"plr": 2.0}}}},
    ...                  "y": {"full": {"auc": 0.7, "at_fpr": {"0.001": {"plr": 1.0}, "0.01": {"plr": 2.5}}}}}}
    >>> h = highest_over_attacks(a)
    >>> h["plr_0.1"], h["plr_0.1_attack"], h["plr_1"], h["auc"], h["auc_attack"]
    (3.0, 'x', 2.5, 0.7, 'y')
    """
    best: dict = {}
    for key, fpr in (("plr_0.1", "0.001"), ("plr_1", "0.01")):
        name, value = max(((n, a["full"]["at_fpr"][fpr]["plr"]) for n, a in audit["attacks"].items()),
                          key=lambda t: t[1])
        best[key], best[f"{key}_attack"] = value, name
        ci = audit["attacks"][name]["full"]["at_fpr"][fpr].get("plr_ci")
        best[f"{key}_lo"], best[f"{key}_hi"] = (float("nan"), float("nan")) if ci is None else (ci[0], ci[1])
    name, auc = max(((n, a["full"]["auc"]) for n, a in audit["attacks"].items()), key=lambda t: t[1])
    best["auc"], best["auc_attack"] = auc, name
    ci = audit["attacks"][name]["full"].get("auc_ci")
    best["auc_lo"], best["auc_hi"] = (float("nan"), float("nan")) if ci is None else (ci[0], ci[1])
    return best


def _workers_per_cell(jobs: int) -> int:
    """The ``parallel`` shadow engine's processes per cell, so ``--jobs`` cells share the cores."""
    return max(1, available_cores() // max(1, jobs))


def run_cells(cells: Sequence[Cell], settings: CompareSettings, log_dir: Path,
              on_done: Callable[[Cell, dict | Exception], None] | None = None) -> dict[str, dict | Exception]:
    """Every cell, ``settings.jobs`` at a time; a failed cell is reported, not fatal to the rest."""
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict | Exception] = {}
    lock = threading.Lock()

    def one(cell: Cell) -> None:
        try:
            res: dict | Exception = run_cell(cell, settings, log_dir)
        except (FedmistError, OSError, KeyError, json.JSONDecodeError) as err:
            res = err
        with lock:
            results[cell.name] = res
            if on_done is not None:
                on_done(cell, res)

    with ThreadPoolExecutor(max_workers=max(1, settings.jobs)) as pool:
        list(pool.map(one, cells))
    return results


# --- the table ----------------------------------------------------------------------------------
COLUMNS = ["defense", "test_acc", "acc_drop", "plr_0.1", "plr_0.1_attack", "plr_1", "auc", "time_x_sgd",
           "paper_time_x_sgd", "mem_x_sgd", "paper_mem_factor", "epsilon", "train_seconds", "peak_rss_mb",
           "n_shadows", "seeds"]


def aggregate(rows: Sequence[dict]) -> list[dict]:
    """One row per defense (mean over seeds, with the std of test accuracy, PLR@0.1 % and AUC; numpy's
    population std, ddof=0), plus the accuracy drop and time / memory ratios relative to SGD when an
    SGD row exists."""
    import numpy as np

    by_defense: dict[str, list[dict]] = {}
    for r in rows:
        by_defense.setdefault(r["defense"], []).append(r)
    table = []
    for defense, rs in by_defense.items():
        mean = lambda k: float(np.mean([r[k] for r in rs]))  # noqa: E731
        std = lambda k: float(np.std([r[k] for r in rs]))  # noqa: E731
        worst = max(rs, key=lambda r: r["plr_0.1"])
        table.append({"defense": defense, "test_acc": mean("test_acc"), "test_acc_std": std("test_acc"),
                      "plr_0.1": mean("plr_0.1"), "plr_0.1_std": std("plr_0.1"), "plr_0.1_attack": worst["plr_0.1_attack"],
                      "plr_1": mean("plr_1"), "auc": mean("auc"), "auc_std": std("auc"), "epsilon": mean("epsilon"),
                      "train_seconds": mean("train_seconds"), "peak_rss_mb": mean("peak_rss_mb"),
                      "n_shadows": rs[0]["n_shadows"], "seeds": len(rs),
                      "paper_time_x_sgd": PAPER_TIME_RATIO.get(defense, float("nan")),
                      "paper_mem_factor": PAPER_MEMORY_FACTOR.get(defense, float("nan"))})
    base = next((t for t in table if t["defense"] == "sgd"), None)
    for t in table:
        t["acc_drop"] = (base["test_acc"] - t["test_acc"]) if base else float("nan")
        t["time_x_sgd"] = t["train_seconds"] / base["train_seconds"] if base else float("nan")
        t["mem_x_sgd"] = t["peak_rss_mb"] / base["peak_rss_mb"] if base else float("nan")
    return table


def write_table(table: Sequence[dict], out: Path, header: str) -> None:
    """compare.csv (every column), compare.md (readable) and tradeoff.png (the paper's Figure 1)."""
    with open(out / "compare.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*COLUMNS, "test_acc_std", "plr_0.1_std", "auc_std"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    (out / "compare.md").write_text(header + "\n\n" + markdown_table(table) + "\n")
    plot_tradeoff(table, out / "tradeoff.png")


def _fmt(v: float, spec: str) -> str:
    return "–" if v != v else format(v, spec)  # NaN -> dash


def markdown_table(table: Sequence[dict]) -> str:
    lines = ["| defense | test acc % | drop vs SGD | highest PLR@0.1% (attack) | PLR@1% | AUC | ε | "
             "train s | time ×SGD (paper) | peak RSS MB | mem ×SGD (paper models) | shadows × seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        std = f" ± {100 * t['test_acc_std']:.2f}" if t["seeds"] > 1 else ""
        plr_std = f" ± {t['plr_0.1_std']:.1f}" if t["seeds"] > 1 else ""
        auc_std = f" ± {t['auc_std']:.3f}" if t["seeds"] > 1 and "auc_std" in t else ""
        lines.append(
            f"| {t['defense']} | {100 * t['test_acc']:.2f}{std} | {_fmt(100 * t['acc_drop'], '+.2f')} | "
            f"{t['plr_0.1']:.2f}{plr_std} ({t['plr_0.1_attack']}) | {t['plr_1']:.2f} | {t['auc']:.3f}{auc_std} | "
            f"{_fmt(t['epsilon'], '.3g')} | {t['train_seconds']:.0f} | {_fmt(t['time_x_sgd'], '.2f')} "
            f"({_fmt(t['paper_time_x_sgd'], '.2f')}) | {_fmt(t['peak_rss_mb'], '.0f')} | "
            f"{_fmt(t['mem_x_sgd'], '.2f')} ({_fmt(t['paper_mem_factor'], '.0f')}) | {t['n_shadows']} × {t['seeds']} |")
    return "\n".join(lines)


def plot_tradeoff(table: Sequence[dict], path: Path) -> None:
    """Test accuracy vs highest PLR@0.1 % (log scale): lower right is better, as in Figure 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    # Neighbours in accuracy get their labels on alternate sides, so close points stay readable.
    for k, t in enumerate(sorted(table, key=lambda t: t["test_acc"])):
        ax.scatter(100 * t["test_acc"], t["plr_0.1"], s=40)
        ax.annotate(t["defense"], (100 * t["test_acc"], t["plr_0.1"]), textcoords="offset points",
                    xytext=(4, 4) if k % 2 == 0 else (4, -11), fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("test accuracy (%)")
    ax.set_ylabel("highest PLR @ 0.1% FPR over all attacks")
    ax.set_title("privacy–utility trade-off (lower right is better)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- cells from the command line -----------------------------------------------------------------
def plan_cells(dataset: str, defenses: Sequence[str], seeds: Sequence[int], out: Path,
               tuned_dir: Path | None = None, overrides: dict[str, str] | None = None) -> list[Cell]:
    """Cells for every (defense, seed); a tuned recipe (``fedmist tune``) replaces the default one.

    Unknown defenses and defenses whose recipe cannot run on the dataset are refused up front,
    before anything trains.
    """

    unknown = [d for d in defenses if d not in DEFENSES]
    if unknown:
        raise ConfigError(f"unknown defense(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFENSES))}")
    cells = []
    for defense in defenses:
        recipe = None
        if tuned_dir is not None:
            tuned = tuned_dir / f"{dataset.replace(':', '-')}-{defense}.toml"
            recipe = tuned if tuned.is_file() else None
        cells += [make_cell(dataset, defense, seed, out, recipe or default_recipe(dataset, defense), overrides,
                            label="tuned-" + defense if recipe else "") for seed in seeds]
    return cells


def make_cell(dataset: str, defense: str, seed: int, out: Path, recipe: Path | None,
              overrides: dict[str, str] | None = None, label: str = "") -> Cell:
    """One cell, its config checked now (before anything trains); run dir ``out/runs/DATASET-LABEL-sSEED``."""

    base = RunConfig.from_toml(recipe) if recipe else RunConfig()
    cfg = RunConfig.from_dict({"dataset": dataset, "defense": defense, "seed": seed, **(overrides or {})}, base=base)
    try:
        cfg = prepare_config(cfg)
    except ConfigError as err:
        raise ConfigError(f"defense {defense!r} cannot run on {dataset}: {err}") from None
    run_dir = out / "runs" / f"{dataset.replace(':', '-')}-{label or defense}-s{seed}"
    return Cell(dataset, defense, seed, run_dir, recipe, dict(overrides or {}), label, cfg)
