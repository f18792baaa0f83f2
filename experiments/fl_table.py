"""Markdown table of federated runs audited per threat: best AUC [95 % CI] / best TPR@0.1 % per cell.

Reads every run directory under each given folder (a ``fedmist compare --mode fl`` output, or one
run directory): ``audit-server.json`` (server), ``audit-client<K>.json`` (participant),
``audit.json`` (outsider) and, where present, the MIST peer-leak and active-attack reports.

    python experiments/fl_table.py compare/location-fl50-iid compare/location-fl50-dir05 \
        --out experiments/results/location-fl50-table.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _cli import nonnegative_int, run_main  # same folder

THREATS = {"server": "audit-server.json", "participant": "audit-client{k}.json", "outsider": "audit.json",
           "peer leak": "audit-client{k}-peerleak.json", "active": "audit-client{k}-active.json"}


def best_cell(path: Path) -> str:
    """'AUC [lo, hi] / TPR%' of the attack with the highest AUC (and the highest TPR@0.1 %)."""
    if not path.is_file():
        return "–"
    attacks = json.loads(path.read_text())["attacks"]
    name = max(attacks, key=lambda a: attacks[a]["full"]["auc"])
    full = attacks[name]["full"]
    tpr = max(a["full"]["at_fpr"]["0.001"]["tpr"] for a in attacks.values())
    return f"{full['auc']:.3f} [{full['auc_ci'][0]:.3f}, {full['auc_ci'][1]:.3f}] / {100 * tpr:.1f} %"


def run_dirs(folder: Path) -> list[Path]:
    if (folder / "config.json").is_file():
        return [folder]
    return sorted(p for p in (folder / "runs").iterdir() if (p / "config.json").is_file())


def row(run: Path, k: int) -> str:
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    dp = summary.get("fl", {}).get("dp", {})
    eps = f"{dp['epsilon']:.3g}" if dp else "–"
    cells = [best_cell(run / f.format(k=k)) for f in THREATS.values()]
    return (f"| {run.name} | {cfg['defense']} | {cfg['partition']} | {cfg['rounds']} | "
            f"{100 * summary['test_acc']:.1f} % | {eps} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--client", type=nonnegative_int, default=0, help="the participant whose audit is shown")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    for folder in args.folders:  # every folder is checked before anything is written
        if not (folder / "config.json").is_file() and not (folder / "runs").is_dir():
            ap.error(f"{folder} is neither a run directory (config.json) nor a `fedmist compare --mode fl` "
                     "output (runs/)")
    lines = ["| run | defense | partition | rounds | test acc | ε (δ=1e-5) | " + " | ".join(THREATS) + " |",
             "|" + "---|" * (6 + len(THREATS))]
    lines += [row(run, args.client) for folder in args.folders for run in run_dirs(folder)]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    run_main(main)
