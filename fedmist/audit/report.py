"""The files every audit leaves behind, and the console table.

``audit.json`` (all metrics), ``audit.csv`` (one row per attack), ``scores.npz`` (scores and
membership, ML Privacy Meter style, so any tool can recompute the numbers), ``roc.png``
(log-log) and ``roc_linear.png``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from rich.table import Table
from sklearn.metrics import roc_curve

from fedmist.audit.metrics import roc_metrics
from fedmist.errors import AuditError

FORMAT = "fedmist-audit-1"
HEADLINE_FPR = 0.001  # the paper's headline: highest PLR at 0.1 % FPR over all attacks
VULNERABLE_SUBSET = ("TPR on the most vulnerable audited members, FPR on all audited non-members "
                     "(MIST §4.6 ranks training examples only)")


def _headline(attacks: Mapping[str, Mapping], subset: str) -> dict | None:
    key = f"{HEADLINE_FPR:g}"
    best = None
    for name, res in attacks.items():
        m = res[subset]
        if m is None:
            continue
        point = m["at_fpr"][key]
        if best is None or point["plr"] > best["plr"]:
            best = {"attack": name, "fpr": HEADLINE_FPR, "tpr": point["tpr"], "plr": point["plr"],
                    "plr_ci": point["plr_ci"], "max_false_positives": point["max_false_positives"],
                    "fpr_resolution": m["fpr_resolution"]}
    return best


def build_report(scores: Mapping[str, np.ndarray], is_member: np.ndarray, vulnerable: np.ndarray | None = None,
                 fprs: Sequence[float] = (0.001, 0.01), n_bootstrap: int = 200, seed: int = 0) -> dict:
    """Metrics of every attack on the full audit set and on the most vulnerable subset.

    ``scores``: {attack: (n,) scores, higher = member}; ``is_member`` (n,) bool; ``vulnerable``:
    indices into the audit set of the most vulnerable members (see ``VULNERABLE_SUBSET``).
    The headline is the highest PLR at 0.1 % FPR over all attacks (always among ``fprs``).
    """
    is_member = np.asarray(is_member)
    fprs = sorted({float(f) for f in fprs} | {HEADLINE_FPR})
    subset = None
    if vulnerable is not None:
        vulnerable = np.asarray(vulnerable, dtype=np.int64)
        subset = np.zeros(len(is_member), dtype=bool)
        subset[vulnerable] = True
        subset |= ~is_member
    attacks = {}
    for name, s in scores.items():
        s = np.asarray(s)
        if s.shape != is_member.shape:
            raise AuditError(f"attack {name!r}: {s.shape} scores for {is_member.shape} examples")
        attacks[name] = {
            "full": roc_metrics(s, is_member, fprs, n_bootstrap, seed),
            "vulnerable": None if subset is None else roc_metrics(s[subset], is_member[subset], fprs,
                                                                  n_bootstrap, seed),
        }
    return {
        "format": FORMAT,
        "n_examples": int(len(is_member)), "n_members": int(is_member.sum()),
        "n_nonmembers": int((~is_member).sum()), "fprs": fprs, "n_bootstrap": n_bootstrap,
        "attacks": attacks,
        "headline": _headline(attacks, "full"),
        "headline_vulnerable": _headline(attacks, "vulnerable"),
        "vulnerable_subset": None if vulnerable is None else {
            "size": int(len(vulnerable)), "n_nonmembers": int((~is_member).sum()), "rule": VULNERABLE_SUBSET},
    }


def _csv_row(name: str, res: Mapping, fprs: Sequence[float]) -> dict:
    row: dict[str, object] = {"attack": name}
    for prefix, m in (("", res["full"]), ("vul_", res["vulnerable"])):
        row[f"{prefix}auc"] = "" if m is None else m["auc"]
        row[f"{prefix}auc_lo"], row[f"{prefix}auc_hi"] = ("", "") if m is None or m["auc_ci"] is None else m["auc_ci"]
        for f in fprs:
            point = None if m is None else m["at_fpr"][f"{f:g}"]
            for what in ("tpr", "plr"):
                col = f"{prefix}{what}@{f:g}"
                row[col] = "" if point is None else point[what]
                ci = None if point is None else point[f"{what}_ci"]
                row[f"{col}_lo"], row[f"{col}_hi"] = ("", "") if ci is None else ci
    return row


def _plot(path: Path, scores: Mapping[str, np.ndarray], is_member: np.ndarray, report: Mapping, log: bool) -> None:
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    ax.set_prop_cycle(color=colormaps["tab20"].colors)  # 15+ attacks: the default cycle repeats after 10
    n_non = int((~is_member).sum())
    lo = 1e-4 if n_non >= 10_000 else 1e-3
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(is_member, s)
        full = report["attacks"][name]["full"]
        ax.plot(fpr, tpr, lw=1.2, label=f"{name} (AUC {full['auc']:.3f}, "
                                        f"TPR@0.1% {full['at_fpr'][f'{HEADLINE_FPR:g}']['tpr']:.3f})")
    ax.plot([lo if log else 0, 1], [lo if log else 0, 1], ls="--", color="grey", lw=0.8, label="chance")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1)
    else:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{int(is_member.sum())} members / {n_non} non-members")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(out_dir: Path, report: Mapping, scores: Mapping[str, np.ndarray], is_member: np.ndarray,
                 arrays: Mapping[str, np.ndarray] | None = None, suffix: str = "") -> dict[str, Path]:
    """Write the five report files into ``out_dir``; ``arrays`` go into scores.npz as well.

    ``suffix`` (e.g. ``"-server"``) goes before each extension, so the reports of different
    threats (``fedmist attack --threat``) sit side by side: ``audit-server.json``, ``roc-server.png``.
    The returned dict is keyed by the plain names (``"audit.json"`` ...)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    is_member = np.asarray(is_member, dtype=bool)
    paths = {name: out_dir / name.replace(".", f"{suffix}.", 1)
             for name in ("audit.json", "audit.csv", "scores.npz", "roc.png", "roc_linear.png")}
    paths["audit.json"].write_text(json.dumps(report, indent=2) + "\n")
    rows = [_csv_row(name, res, report["fprs"]) for name, res in report["attacks"].items()]
    with open(paths["audit.csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["attack"])
        writer.writeheader()
        writer.writerows(rows)
    np.savez(paths["scores.npz"], is_member=is_member, attacks=np.array(list(scores), dtype=str),
             **{f"score_{name}": np.asarray(s, dtype=np.float64) for name, s in scores.items()}, **(arrays or {}))
    _plot(paths["roc.png"], scores, is_member, report, log=True)
    _plot(paths["roc_linear.png"], scores, is_member, report, log=False)
    return paths


def _fmt(value: float, ci: Sequence[float] | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}" + ("" if ci is None else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]")


def format_report(report: Mapping) -> Table:
    """One row per attack: AUC, TPR and PLR at each FPR (95 % CI), PLR on the vulnerable subset."""
    fprs = report["fprs"]
    table = Table(title=f"membership audit: {report['n_members']} members / {report['n_nonmembers']} non-members")
    width = max([len(n) for n in report.get("attacks", {})] + [6])
    table.add_column("attack", no_wrap=True, min_width=width)  # names whole even in 80 columns
    table.add_column("AUC", justify="right")
    for f in fprs:
        table.add_column(f"TPR@{f:.1%}", justify="right")
        table.add_column(f"PLR@{f:.1%}", justify="right")
    if report.get("vulnerable_subset"):
        table.add_column(f"vulnerable PLR@{HEADLINE_FPR:.1%}", justify="right")
    for name, res in report["attacks"].items():
        full = res["full"]
        cells = [name, _fmt(full["auc"], full["auc_ci"], 3)]
        for f in fprs:
            point = full["at_fpr"][f"{f:g}"]
            cells += [f"{point['tpr']:.3f}", _fmt(point["plr"], point["plr_ci"])]
        if report.get("vulnerable_subset"):
            vul = res["vulnerable"]["at_fpr"][f"{HEADLINE_FPR:g}"]
            cells.append(_fmt(vul["plr"], vul["plr_ci"]))
        table.add_row(*cells)
    head = report.get("headline")
    if head is not None:
        fp = head["max_false_positives"]
        table.caption = (f"highest PLR@{HEADLINE_FPR:.1%}: {head['plr']:.2f} ({head['attack']}); the FPR allows "
                         f"{fp} false positive{'s' if fp != 1 else ''} of {report['n_nonmembers']} non-members")
    for warning in report.get("warnings", []):
        table.caption = (table.caption + "\n" if table.caption else "") + f"WARNING: {warning}"
    return table
