"""``fedmist compare --mode fl``: FedAvg, MIST-in-FL and DP-FedAvg side by side for three threats.

Each row trains once (``fedmist simulate --mode fl --record-updates``) and is audited three times
(``fedmist attack --threat server``, ``--threat client:K``, ``--threat outsider``), all as CLI
subprocesses like ``fedmist compare`` (logs in ``OUT/logs/``; a finished run or audit is reused).
Output: ``compare-fl.csv``, ``compare-fl.md`` and ``compare-fl.png`` (highest PLR@0.1 % per threat
and defense). ``--set`` overrides apply to every row, except that ``fl_dp_noise`` / ``fl_dp_clip``
apply to the DP-FedAvg row only (the other rows are trained without DP).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from fedmist.config import RunConfig
from fedmist.errors import ConfigError
from fedmist.runs.console import console
from fedmist.runs.recipes import default_recipe
from fedmist.runs.rundir import prepare_config
from fedmist.studies.cells import (
    CompareError,
    audit_is_current,
    check_reuse,
    run_fedmist,
    train_once,
)
from fedmist.studies.compare import highest_over_attacks

FL_ROWS = {"fedavg": ("fedavg", "FedAvg"), "mist": ("mist", "MIST-in-FL"), "dpfedavg": ("dpfedavg", "DP-FedAvg")}
ROW_ALIASES = {"sgd": "fedavg"}  # the defense name a virtual-mode user types for the undefended row
DP_KEYS = ("fl_dp_noise", "fl_dp_clip")
DEFAULT_DP = {"fl_dp_noise": "0.01", "fl_dp_clip": "1.0"}
DEFAULT_ATTACKS = "loss,mentr,confidence,entropy"  # outsider attacks that need no shadow models
DEFAULT_ROUNDS = "20"  # when the command line sets none: the recipes' 100 epochs as rounds would record GBs


def plan(defenses: Sequence[str], overrides: dict[str, str]) -> list[tuple[str, str, dict[str, str]]]:
    """(row name, defense, --set overrides) per row."""
    rows = []
    for name in defenses:
        name = ROW_ALIASES.get(name, name)
        if name not in FL_ROWS:
            raise ConfigError(f"--mode fl compares {', '.join(FL_ROWS)} (sgd = fedavg); got {name!r}")
        base = {k: v for k, v in overrides.items() if k not in DP_KEYS}
        if name == "dpfedavg":
            base.update({k: overrides.get(k, DEFAULT_DP[k]) for k in DP_KEYS})
        rows.append((name, FL_ROWS[name][0], base))
    return rows


def _threat_summary(audit: dict) -> dict:
    best = highest_over_attacks(audit)
    tpr = max(a["full"]["at_fpr"]["0.001"]["tpr"] for a in audit["attacks"].values())
    return {"auc": best["auc"], "auc_attack": best["auc_attack"], "tpr_0.1": tpr, "plr_0.1": best["plr_0.1"],
            "plr_0.1_attack": best["plr_0.1_attack"]}


def row_config(dataset: str, defense: str, overrides: dict[str, str]) -> tuple[RunConfig, dict[str, str], Path | None]:
    """A row's config, the ``--set`` items that build it on its recipe, and the recipe."""
    sets = {"mode": "fl", "dataset": dataset, "defense": defense, "record_updates": "true", "rounds": DEFAULT_ROUNDS,
            **overrides}
    recipe = default_recipe(dataset, defense)
    base = RunConfig.from_toml(recipe) if recipe else RunConfig()
    return prepare_config(RunConfig.from_dict(sets, base=base)), sets, recipe


def run_row(name: str, defense: str, overrides: dict[str, str], dataset: str, out: Path, attacks: str,
            shadows: int, client: int, audit_seed: int, bootstrap: int, force: bool = False) -> dict:
    run_dir = out / "runs" / name
    log = out / "logs" / f"{name}.log"
    cfg, sets, recipe = row_config(dataset, defense, overrides)
    train_once(cfg, sets, recipe, run_dir, log, force=force)
    threats = {"server": "server", "client": f"client:{client}", "outsider": "outsider"}
    files = {"server": "audit-server.json", "client": f"audit-client{client}.json", "outsider": "audit.json"}
    for key, threat in threats.items():
        wanted = {"seed": audit_seed, "bootstrap": bootstrap, **({"n_shadows": shadows} if key == "outsider" else {})}
        if audit_is_current(run_dir / files[key], run_dir / "model.pt", wanted,
                            attacks.split(",") if key == "outsider" else [], force):
            continue
        args = ["attack", str(run_dir), "--threat", threat, "--audit-seed", str(audit_seed), "--bootstrap",
                str(bootstrap)]
        if key == "outsider":
            args += ["--attacks", attacks, "--shadows", str(shadows), "--shadow-engine", "inprocess"]
        run_fedmist(args, log)
    metrics = json.loads((run_dir / "metrics.json").read_text())["summary"]
    fl = metrics.get("fl", {})
    row = {"row": FL_ROWS[name][1], "test_acc": metrics["test_acc"], "train_acc": metrics["train_acc"],
           "epsilon": fl.get("dp", {}).get("epsilon", float("inf")) if name == "dpfedavg" else float("nan"),
           "partition": fl.get("partition"), "rounds": fl.get("rounds"),
           "train_s": metrics["wall_time"], "record_mb": fl.get("recording", {}).get("bytes", 0) / 1e6,
           "record_s": fl.get("recording", {}).get("seconds", 0.0), "run_dir": str(run_dir)}
    for key in threats:
        for k, v in _threat_summary(json.loads((run_dir / files[key]).read_text())).items():
            row[f"{key}_{k}"] = v
    leak = run_dir / f"audit-client{client}-peerleak.json"
    if leak.is_file():
        for k, v in _threat_summary(json.loads(leak.read_text())).items():
            row[f"peerleak_{k}"] = v
    return row


COLUMNS = ["row", "partition", "rounds", "test_acc", "epsilon",
           "server_auc", "server_tpr_0.1", "server_plr_0.1",
           "client_auc", "client_tpr_0.1", "client_plr_0.1",
           "outsider_auc", "outsider_tpr_0.1", "outsider_plr_0.1",
           "peerleak_auc", "peerleak_tpr_0.1", "train_s", "record_mb", "record_s"]


def _fmt(v) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        if v != v:
            return "–"
        return "∞" if v == float("inf") else (f"{v:.3g}" if abs(v) >= 100 else f"{v:.3f}")
    return str(v)


def write_outputs(rows: list[dict], out: Path, header: str) -> None:
    cols = COLUMNS + sorted({k for r in rows for k in r} - set(COLUMNS))
    with open(out / "compare-fl.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    (out / "compare-fl.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "compare-fl.png")


def plot(rows: list[dict], path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    threats = ["server", "client", "outsider"]
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        vals = [max(r.get(f"{t}_plr_0.1", 0.0), 1e-1) for t in threats]
        ax.bar(np.arange(3) + i * width, vals, width, label=r["row"])
    ax.set_xticks(np.arange(3) + width * (len(rows) - 1) / 2)
    ax.set_xticklabels(["server (updates)", "participant (global models)", "outsider (final model)"])
    ax.set_yscale("log")
    ax.axhline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_ylabel("highest PLR @ 0.1% FPR (log; 0 drawn at 0.1)")
    ax.set_title(f"membership inference in FL ({rows[0].get('partition') if rows else ''})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def fl_compare(dataset: str, defenses: Sequence[str], overrides: dict[str, str], out: Path, attacks: str,
               shadows: int, audit_seed: int, bootstrap: int, client: int = 0, force: bool = False) -> list[dict]:

    out.mkdir(parents=True, exist_ok=True)
    planned = plan(defenses, overrides)
    for name, defense, sets in planned:  # every row's config checked (and its directory) before any trains
        check_reuse(row_config(dataset, defense, sets)[0], out / "runs" / name, force)
    rows, failed = [], []
    for name, defense, sets in planned:
        console.print(f"  {name}: fedmist simulate --mode fl --defense {defense} "
                      + " ".join(f"--set {k}={v}" for k, v in sets.items()))
        try:
            row = run_row(name, defense, sets, dataset, out, attacks, shadows, client, audit_seed, bootstrap, force)
        except CompareError as err:
            console.print(f"  [red]{name} failed[/]: {err}")
            failed.append(name)
            continue
        console.print(f"  {row['row']}: test {100 * row['test_acc']:.2f} %, AUC server {row['server_auc']:.3f} / "
                      f"client {row['client_auc']:.3f} / outsider {row['outsider_auc']:.3f}")
        rows.append(row)
    if not rows:
        raise ConfigError(f"every row failed ({', '.join(failed)}); see {out / 'logs'}")
    header = (f"# {dataset}: membership inference in federated learning\n\nThreats: server = passive server with "
              f"every client's update; client = passive participant client:{client} with the global model of every "
              f"round; outsider = final model ({attacks}, {shadows} shadows). Per threat: highest AUC, TPR and PLR "
              f"at 0.1 % FPR over its attacks (audit seed {audit_seed}). peerleak = MIST's forwarded phase-1 weights "
              f"attacked by client:{client} (peer {client + 1}). ε: DP-FedAvg, client-level, q = 1, δ from the run.")
    if failed:
        header += f"\n\nFailed rows (see logs): {', '.join(failed)}"
    write_outputs(rows, out, header)
    console.print((out / "compare-fl.md").read_text())
    console.print(f"wrote {out / 'compare-fl.csv'}, {out / 'compare-fl.md'}, {out / 'compare-fl.png'}")
    if failed:
        raise ConfigError(f"{len(failed)} row(s) failed: {', '.join(failed)}; the table has the others")
    return rows
