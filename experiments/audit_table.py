"""Markdown table of one or more audited runs (reads each run's audit.json and metrics.json).

    python experiments/audit_table.py runs/location-sgd-s0 runs/location-mist-l14-s0 \
        --out experiments/results/location-audit-s0.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _cli import require_files, run_main  # same folder


def rows_of(run: Path) -> list[str]:
    audit = json.loads((run / "audit.json").read_text())
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    cfg = json.loads((run / "config.json").read_text())
    head = audit["headline"]
    lines = [f"### {run.name}: {cfg['defense']} (C={cfg['clients']}, λ={cfg['lam']}), test acc "
             f"{100 * summary['test_acc']:.2f} %, train acc {100 * summary['train_acc']:.2f} %",
             "", f"{audit['n_members']} members / {audit['n_nonmembers']} non-members; "
             f"highest PLR@0.1%: **{head['plr']:.2f}** ({head['attack']}, 95% CI {head['plr_ci'][0]:.1f}–"
             f"{head['plr_ci'][1]:.1f}; FPR 0.1% allows {head['max_false_positives']} false positive(s))", "",
             "| attack | AUC | TPR@0.1% | PLR@0.1% [95% CI] | TPR@1% | PLR@1% | vulnerable PLR@0.1% |",
             "|---|---|---|---|---|---|---|"]
    for name, res in audit["attacks"].items():
        f, v = res["full"], res["vulnerable"]
        a1, a2 = f["at_fpr"]["0.001"], f["at_fpr"]["0.01"]
        lines.append(f"| {name} | {f['auc']:.3f} | {100 * a1['tpr']:.2f}% | {a1['plr']:.2f} "
                     f"[{a1['plr_ci'][0]:.1f}, {a1['plr_ci'][1]:.1f}] | {100 * a2['tpr']:.2f}% | {a2['plr']:.2f} | "
                     f"{v['at_fpr']['0.001']['plr']:.1f} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="Membership-inference audit")
    args = ap.parse_args()
    for run_dir in args.runs:  # every run is checked before anything is written
        require_files(ap, run_dir, ("config.json", "metrics.json", "audit.json"),
                      f"give run directories audited with `fedmist attack {run_dir}`")
    lines = [f"# {args.title}", ""]
    for run in args.runs:
        lines += rows_of(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    run_main(main)
