"""Reproduce a MIST paper experiment from the recipes: train, audit, and write our numbers next to
the paper's in ``experiments/results/<dataset>-<experiment>.md`` (+ a trade-off plot).

Experiments (all resumable: every cell is a run directory under ``--out``, reused when finished):

- ``defenses``: every defense with its recipe (paper Figure 1 / §5), headline rows over ``--seeds``.
- ``xdiff-loss``: MIST with the L1 (paper), L2 and KL cross-difference losses (paper Table 6).
- ``lambda``: MIST's λ sweep, ``clients``: C, ``repartition``: every epoch (paper) vs fixed (authors' code).

    python experiments/reproduce.py defenses --dataset location --shadows 16 --seeds 0,1,2
    python experiments/reproduce.py xdiff-loss --dataset location --shadows 16
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from _cli import even_shadows, int_list, name_list, run_main, shadows_for  # same folder

ROOT = Path(__file__).resolve().parents[1]
DEFENSES = ["sgd", "mist", "dpsgd", "mixup_mmd", "hamp", "selena", "advreg", "dmp", "memguard"]

# The paper's headline numbers (§5, "Effect of MIST+Mixup"): highest PLR @ 0.1 % FPR over all attacks.

# (label, defense, overrides) per experiment; the MIST recipe supplies everything not overridden.
VARIANTS = {
    "xdiff-loss": [("sgd", "sgd", {})] + [(f"mist-{k}", "mist", {"xdiff_loss": k}) for k in ("l1", "l2", "kl")],
    "lambda": [("sgd", "sgd", {})] + [(f"mist-lam{v:g}", "mist", {"lam": str(v)}) for v in (1, 2, 4, 8, 14, 28)],
    "clients": [("sgd", "sgd", {})] + [(f"mist-c{c}", "mist", {"clients": str(c)}) for c in (2, 3, 4, 6)],
    "repartition": [("sgd", "sgd", {})] + [(f"mist-{r}", "mist", {"repartition": r}) for r in ("epoch", "fixed")],
}

WHY = ("Where we differ from the paper: (1) the audit set is Location's 1,010 non-members and as many "
       "members, so FPR 0.1 % is one false positive and PLR@0.1 % is TPR×1000 — a single confidently "
       "recognised member moves it by 1; the paper does not say how it resolves 0.1 % on Location; "
       "(2) our SGD baseline trains to 100 % training accuracy (momentum 0.9, 100 epochs), an extreme "
       "memoriser, and LiRA on 16 shadows (its pooled-variance variants score highest; see "
       "location-shadow-stability.md) is stronger than the attacks the paper's 2.89 reflects; (3) the paper tunes λ so the test accuracy drops < 1 point, while the "
       "Table 7 recipe (λ = 14) costs 14.9 points here on the mean of seeds 0–2 (18.0 on seed 0; see the λ sweep).")

WHY_NO_SHADOWS = ("Without shadow models only the threshold attacks (loss, confidence, entropy, Song & Mittal's "
                  "modified entropy) run, which on Location resolve PLR@0.1 % from a handful of members: these "
                  "rows rank variants against each other; the paper's numbers and ours with 16 shadows are in "
                  "location-compare-s0.md and location-audit-s0.md. The paper tunes λ for < 1 point of accuracy "
                  "drop; the Table 7 recipe (λ = 14) costs 14.9 points here on the mean of seeds 0–2, 18.0 on seed 0 (see the λ sweep).")


def _shown(path: Path) -> str:
    """``path`` relative to the project when it is inside it (reports carry no machine paths)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", choices=["defenses", *VARIANTS])
    ap.add_argument("--dataset", default="location")
    ap.add_argument("--shadows", type=even_shadows, default=16)
    ap.add_argument("--shadows-for", type=shadows_for, action="append", default=[], help="DEFENSE=N, e.g. selena=4")
    ap.add_argument("--seeds", type=int_list, default="0")
    ap.add_argument("--defenses", type=name_list, default=",".join(DEFENSES), help="rows of the defenses experiment")
    ap.add_argument("--attacks", type=name_list, default="loss,confidence,entropy,mentr,lira,rmia,class_nn")
    ap.add_argument("--out", type=Path, default=None, help="cells' directory (default runs/reproduce-<dataset>)")
    ap.add_argument("--shadow-engine", default="inprocess")
    args = ap.parse_args()

    from fedmist import (
        PAPER_HIGHEST_PLR,
        CompareSettings,
        ShadowTrainer,
        aggregate,
        cell_row,
        default_recipe,
        check_attacks,
        expand_attack_names,
        get_workspace,
        make_cell,
        markdown_table,
        plot_tradeoff,
        run_cells,
        simulate_runs,
    )

    out = args.out or ROOT / "runs" / f"reproduce-{args.dataset.replace(':', '-')}"
    seeds = args.seeds
    if args.experiment == "defenses":
        plan = [(d, d, {}) for d in args.defenses]
    else:
        plan = VARIANTS[args.experiment]
    # Everything is checked before the first cell trains: each cell's config, the dataset, the engine.
    cells = [make_cell(args.dataset, defense, seed, out, default_recipe(args.dataset, defense), overrides,
                       label if label != defense else "")
             for label, defense, overrides in plan for seed in seeds]
    per_defense = dict(args.shadows_for)
    stray = sorted(set(per_defense) - {defense for _, defense, _ in plan})
    if stray:
        ap.error(f"argument --shadows-for: {', '.join(stray)} is not a row of the {args.experiment} experiment")
    get_workspace(cells[0].config)
    ShadowTrainer(cells[0].config, 0, engine=args.shadow_engine, simulate=simulate_runs)
    check_attacks(expand_attack_names(args.attacks))  # before any cell trains
    settings = CompareSettings(expand_attack_names(args.attacks), args.shadows, shadows_for=per_defense,
                               shadow_engine=args.shadow_engine)
    results = run_cells(cells, settings, out / "logs",
                        on_done=lambda c, r: print(f"  {c.name}: {'failed: ' + str(r) if isinstance(r, Exception) else 'done'}",
                                                   flush=True))
    rows = [cell_row(c) for c in cells if not isinstance(results[c.name], Exception)]
    table = aggregate(rows)
    paper = PAPER_HIGHEST_PLR.get(args.dataset.split(":")[0], {})
    lines = [f"# {args.dataset}: {args.experiment} (reproduction of MIST, USENIX Security 2024)", "",
             f"`python experiments/reproduce.py {' '.join(sys.argv[1:])}`; attacks: {', '.join(settings.attacks)}; "
             f"CPU ({platform.machine()}), {len(seeds)} seed(s); run directories under `{_shown(out)}`.", "",
             markdown_table(table), ""]
    if paper:
        lines += ["| row | highest PLR@0.1 % (ours) | paper | ours − paper |", "|---|---|---|---|"]
        for t in table:
            key = "mist" if t["defense"].startswith("mist") else t["defense"]
            if key in paper:
                lines.append(f"| {t['defense']} | {t['plr_0.1']:.2f} | {paper[key]:.2f} | {t['plr_0.1'] - paper[key]:+.2f} |")
        lines += ["", WHY if args.shadows else WHY_NO_SHADOWS]
    failed = [c.name for c in cells if isinstance(results[c.name], Exception)]
    if failed:
        lines += ["", f"Not finished / failed: {', '.join(failed)} (logs under `{_shown(out / 'logs')}`)."]
    dest = ROOT / "experiments" / "results" / f"{args.dataset.replace(':', '-')}-{args.experiment}.md"
    dest.write_text("\n".join(lines) + "\n")
    plot_tradeoff(table, dest.with_suffix(".png"))
    print("\n".join(lines))
    print(f"wrote {_shown(dest)} and {_shown(dest.with_suffix('.png'))}")


if __name__ == "__main__":
    run_main(main)
