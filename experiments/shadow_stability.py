"""How many shadows does LiRA need? Low-FPR numbers from random subsets of an audit's cached shadows.

DESIGN.md's claim to check: fedmist's shadows (each audited example IN for exactly half of them)
scored on the logit scale φ give stable low-FPR numbers with few shadows, while the authors' audit
(raw probabilities; each point IN for ~89 % of 4,000-of-4,500 draws, so OUT shadows are scarce) needs
far more. Everything here is recomputed from one finished audit's cache (``shadows/``), no training:

Each example gets k shadow scores drawn at random from its cached ones (NaN marks the rest, which
LiRA ignores), so different examples may draw different shadows; per-example statistics are what
a k-shadow audit with the same IN/OUT design would see:

- ``logit, balanced``: fedmist's protocol: k/2 IN and k/2 OUT scores per example, on the logit scale.
- ``probability, balanced``: the same draws, scored with p_y = sigmoid(φ) instead of φ.

The authors' protocol is not emulated here: with 20 models each IN for 89 % of them, an example has
Binomial(20, 0.11) OUT scores, fewer than 2 for 34 % of examples, so no OUT variance (per-example or
pooled within examples) exists for a third of the audit; our cache has S/2 OUT scores per example.

Every variant needs >= 2 scores on each side it uses: a per-example variance from one score does
not exist, and the pooled within-example one is 0 (every score is its example's mean). Each cell: mean ± std over ``--draws`` random subsets (seeded);
AUC and PLR@0.1 % = TPR at FPR <= 0.1 % / 0.001, no bootstrap (the spread over subsets is the point).

    python experiments/shadow_stability.py runs/compare-location/runs/location-sgd-s0 \
        runs/compare-location/runs/location-mist-s0 --draws 20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _cli import int_list, nonnegative_int, positive_int, run_main  # same folder
from sklearn.metrics import roc_auc_score

from fedmist import AuditError, FedmistError, lira_scores, tpr_at_fpr

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = [("lira_online", True, False), ("lira_offline", False, False),
           ("lira_online_fixed", True, True), ("lira_offline_fixed", False, True)]


def load_audit(run_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(target φ (n, A), shadow φ (S, n, A), keep (S, n), is_member (n,)) from a finished audit."""
    cache = run_dir / "shadows"
    try:
        indices = np.load(cache / "indices.npy")
        keep = np.load(cache / "keep.npy")
        shadow = np.load(cache / "scores.npy")
        target = np.load(cache / "target_scores.npy")[0]
        audit = np.load(run_dir / "scores.npz")
    except FileNotFoundError as err:
        raise FedmistError(f"{run_dir}: not a finished shadow audit ({err.filename} is missing; "
                         f"run `fedmist attack {run_dir} --shadows 16` first)") from None
    if not np.array_equal(audit["indices"], indices):
        raise FedmistError(f"{run_dir}: scores.npz and shadows/ audit different examples")
    return target, shadow, keep, audit["is_member"].astype(bool)


def subsample(shadow: np.ndarray, keep: np.ndarray, n_in: int, n_out: int, rng: np.random.Generator) -> np.ndarray:
    """Shadow scores with each example's IN scores cut to ``n_in`` and OUT scores to ``n_out``,
    chosen at random per example; the others become NaN (LiRA's medians and deviations skip them)."""
    key = rng.random(keep.shape)
    out = shadow.copy()
    for side, n in ((keep, n_in), (~keep, n_out)):
        rank = np.where(side, key, np.inf).argsort(axis=0).argsort(axis=0)  # the side's entries rank first
        out[side & (rank >= n)] = np.nan
    return out


def measure(target: np.ndarray, shadow: np.ndarray, keep: np.ndarray, is_member: np.ndarray,
            online: bool, fixed: bool) -> tuple[float, float] | None:
    """(AUC, PLR@0.1 %) of one LiRA variant, or None where it cannot run (too few shadows per side)."""
    present = ~np.isnan(shadow[..., 0])
    need = 2  # one score per side gives no variance, per example or pooled within examples
    if (((~keep) & present).sum(0) < need).any() or (online and ((keep & present).sum(0) < need).any()):
        return None
    try:
        scores = lira_scores(target, shadow, keep, online=online, fix_variance=fixed)
    except AuditError:
        return None
    return roc_auc_score(is_member, scores), tpr_at_fpr(scores, is_member, 0.001) / 0.001


def cell(values: list[tuple[float, float]]) -> str:
    if not values:
        return "–"
    auc, plr = np.array(values).T
    spread = f" ± {plr.std():.1f}" if len(values) > 1 else ""
    return f"{plr.mean():.1f}{spread} ({auc.mean():.3f})"


def shadow_counts(text: str) -> list[int]:
    """``--ks``: comma-separated shadow counts >= 1 (below 4 a side has < 2 scores: the cells read –)."""
    return [positive_int(str(k)) for k in int_list(text)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--ks", type=shadow_counts, default="4,6,8,12,16", help="shadow counts k")
    ap.add_argument("--draws", type=positive_int, default=20)
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "location-shadow-stability.md")
    args = ap.parse_args()
    ks = args.ks
    audits = [load_audit(run) for run in args.runs]  # every run is checked before the first is measured
    lines = ["# LiRA with fewer shadows: stability of the low-FPR numbers", "",
             f"`python experiments/shadow_stability.py {' '.join(str(r) for r in args.runs)} --ks {','.join(map(str, ks))} "
             f"--draws {args.draws} --seed {args.seed}` (CPU; recomputed from each audit's cached shadows, no training).",
             "", "Cells: PLR@0.1 % mean ± std over random subsets of k shadows (mean AUC in brackets); "
             "k/2 IN and k/2 OUT scores per example; 'n/a': more than the cache holds. "
             "With 1,010 non-members FPR 0.1 % is one false positive, so PLR@0.1 % = caught members at it.", ""]
    for run, (target, shadow, keep, is_member) in zip(args.runs, audits):
        S = keep.shape[0]
        per_side = int(keep.sum(0).min()), int((~keep).sum(0).min())
        prob = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731  (φ = logit of p_y)
        scales = {"logit φ": (target, shadow), "probability p_y": (prob(target), prob(shadow))}
        lines += [f"## {run.name} ({S} cached shadows, {per_side[0]} IN / {per_side[1]} OUT per example; "
                  f"{int(is_member.sum())} members, {int((~is_member).sum())} non-members)", "",
                  "| scores | attack | " + " | ".join(f"k = {k}" for k in ks) + " |",
                  "|---|---|" + "---|" * len(ks)]
        for scale, (t, s) in scales.items():
            for name, online, fixed in ATTACKS:
                row = []
                for k in ks:
                    n_in, n_out = k // 2, k - k // 2
                    if n_in > per_side[0] or n_out > per_side[1]:
                        row.append("n/a")  # more scores per side than the cache holds
                        continue
                    rng = np.random.default_rng([args.seed, k])
                    everything = (n_in, n_out) == per_side
                    vals = []
                    for _ in range(1 if everything else args.draws):
                        got = measure(t, subsample(s, keep, n_in, n_out, rng), keep, is_member, online, fixed)
                        if got is None:
                            break
                        vals.append(got)
                    row.append(cell(vals))
                lines.append(f"| {scale} | {name} | " + " | ".join(row) + " |")
        lines.append("")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    out = args.out.resolve()
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    run_main(main)
