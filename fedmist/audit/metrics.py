"""ROC metrics of one attack: AUC, TPR and PLR at fixed low FPRs with bootstrap intervals, and
the most vulnerable subset of the paper's Section 4.6.

Scores follow the attacks' convention: higher = more likely member.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm
from sklearn.metrics import auc, roc_auc_score, roc_curve

from fedmist.errors import AuditError

# MIST §4.6 takes the 1,000 most vulnerable of the 20,000 CIFAR training examples (5 %).
PAPER_VULNERABLE = 1000
PAPER_TRAIN_SIZE = 20000


def _check(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member)
    if s.ndim != 1 or m.shape != s.shape:
        raise AuditError(f"need 1-D scores and membership of equal length, got {s.shape} and {m.shape}")
    if m.dtype != bool:
        raise AuditError(f"is_member must be a bool array, got {m.dtype}")
    if m.all() or not m.any():
        raise AuditError("ROC needs both members and non-members")
    if not np.isfinite(s).all():
        raise AuditError("scores contain NaN or infinity")
    return s, m


def tpr_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr: float) -> float:
    """Largest TPR on sklearn's ROC curve among thresholds whose FPR is <= ``fpr``.

    >>> tpr_at_fpr(np.array([3., 2., 1., 0.]), np.array([True, False, True, False]), 0.0)
    0.5
    """
    f, t, _ = roc_curve(is_member, scores, drop_intermediate=False)
    return float(t[f <= fpr + 1e-12].max())


def roc_metrics(scores: np.ndarray, is_member: np.ndarray, fprs: Sequence[float] = (0.001, 0.01),
                n_bootstrap: int = 200, seed: int = 0) -> dict:
    """AUC and, per target FPR, TPR and PLR with 95 % bootstrap intervals.

    ``scores`` (n,) float, higher = member; ``is_member`` (n,) bool. PLR = TPR / target FPR: the
    denominator is the *target* FPR, as in the MIST paper and LiRA, not the FPR actually reached,
    which can be 0 on small audits. An FPR of f on N non-members allows floor(f·N) false
    positives (``max_false_positives``); with 0 the TPR is that of a zero-false-positive
    threshold and the PLR rests on a resolution of 1/N (``fpr_resolution``), far above f.
    Intervals: percentile bootstrap, resampling members and non-members separately (so each
    resample keeps the class sizes).

    Returns ``{"auc", "auc_ci", "n_members", "n_nonmembers", "fpr_resolution",
    "at_fpr": {"0.001": {"fpr", "tpr", "tpr_ci", "plr", "plr_ci", "max_false_positives"}, ...}}``.
    """
    s, m = _check(scores, is_member)
    fprs = [float(f) for f in fprs]
    if any(not 0 < f <= 1 for f in fprs):
        raise AuditError(f"target FPRs must lie in (0, 1], got {fprs}")
    mem, non = s[m], s[~m]
    rng = np.random.default_rng(seed)
    boot_auc, boot_tpr = [], []
    for _ in range(n_bootstrap):
        bs = np.concatenate([rng.choice(mem, len(mem)), rng.choice(non, len(non))])
        bm = np.r_[np.ones(len(mem), bool), np.zeros(len(non), bool)]
        f, t, _ = roc_curve(bm, bs, drop_intermediate=False)
        boot_auc.append(auc(f, t))
        boot_tpr.append([float(t[f <= fpr + 1e-12].max()) for fpr in fprs])
    boot_tpr_arr = np.asarray(boot_tpr, dtype=np.float64).reshape(n_bootstrap, len(fprs))

    def ci(values: np.ndarray) -> list[float] | None:
        return [float(v) for v in np.percentile(values, [2.5, 97.5])] if n_bootstrap else None

    at = {}
    for j, fpr in enumerate(fprs):
        tpr = tpr_at_fpr(s, m, fpr)
        tpr_ci = ci(boot_tpr_arr[:, j])
        at[f"{fpr:g}"] = {
            "fpr": fpr, "tpr": tpr, "tpr_ci": tpr_ci,
            "plr": tpr / fpr, "plr_ci": None if tpr_ci is None else [v / fpr for v in tpr_ci],
            "max_false_positives": int(np.floor(fpr * len(non) + 1e-9)),
        }
    return {
        "auc": float(roc_auc_score(m, s)), "auc_ci": ci(np.asarray(boot_auc)),
        "n_members": int(m.sum()), "n_nonmembers": int((~m).sum()),
        "fpr_resolution": 1.0 / int((~m).sum()), "at_fpr": at,
    }


def gaussian_nonoverlap(mu1: np.ndarray, sd1: np.ndarray, mu2: np.ndarray, sd2: np.ndarray) -> np.ndarray:
    """Non-overlapping probability mass of N(mu1, sd1²) and N(mu2, sd2²), elementwise, in [0, 1].

    This is the total-variation distance 1 − ∫ min(f1, f2): 0 for identical Gaussians, → 1 for
    disjoint ones. The densities cross where a·x² + b·x + c = 0; between the crossings one
    density dominates, so the distance is |ΔF1 − ΔF2| over that interval (one crossing, at the
    midpoint, when the deviations are equal).

    >>> round(float(gaussian_nonoverlap(np.array(0.), np.array(1.), np.array(2.), np.array(1.))), 6)
    0.682689
    """
    mu1, sd1, mu2, sd2 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (mu1, sd1, mu2, sd2)))
    if (sd1 <= 0).any() or (sd2 <= 0).any():
        raise AuditError("standard deviations must be positive")
    equal = np.abs(sd1 - sd2) <= 1e-9 * np.maximum(sd1, sd2)
    sd = 0.5 * (sd1 + sd2)
    tv_equal = 2 * norm.cdf(np.abs(mu1 - mu2) / (2 * sd)) - 1
    a = 1 / (2 * sd2 ** 2) - 1 / (2 * sd1 ** 2)
    b = mu1 / sd1 ** 2 - mu2 / sd2 ** 2
    c = mu2 ** 2 / (2 * sd2 ** 2) - mu1 ** 2 / (2 * sd1 ** 2) + np.log(sd2 / sd1)
    a_safe = np.where(equal, 1.0, a)
    disc = np.sqrt(np.maximum(b ** 2 - 4 * a_safe * c, 0.0))
    q = -0.5 * (b + np.where(b >= 0, 1.0, -1.0) * disc)
    q = np.where(q == 0, np.finfo(float).tiny, q)
    r1, r2 = q / a_safe, c / q
    lo, hi = np.minimum(r1, r2), np.maximum(r1, r2)
    tv_unequal = np.abs((norm.cdf(hi, mu1, sd1) - norm.cdf(lo, mu1, sd1))
                        - (norm.cdf(hi, mu2, sd2) - norm.cdf(lo, mu2, sd2)))
    return np.where(equal, tv_equal, tv_unequal)


def most_vulnerable_subset(in_mean: np.ndarray, in_std: np.ndarray, out_mean: np.ndarray,
                           out_std: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` examples whose LiRA IN and OUT Gaussians overlap least.

    Inputs are (n,) or (n, A) per-example Gaussian parameters (A augmentations: the
    non-overlap is averaged over them). This is the paper's ranking by the non-overlapping area of
    the two normal distributions. Returns (k,) int64, most vulnerable first (ties by index).
    """
    area = gaussian_nonoverlap(in_mean, in_std, out_mean, out_std)
    if area.ndim == 2:
        area = area.mean(axis=1)
    if area.ndim != 1:
        raise AuditError(f"Gaussian parameters must be (n,) or (n, A), got {np.shape(in_mean)}")
    if not 1 <= k <= len(area):
        raise AuditError(f"vulnerable subset size must be in 1..{len(area)}, got {k}")
    return np.argsort(-area, kind="stable")[:k].astype(np.int64)


def vulnerable_subset_size(n_members: int, paper_n: int = PAPER_VULNERABLE, paper_pool: int = PAPER_TRAIN_SIZE) -> int:
    """Size of the most vulnerable subset for an audit with ``n_members`` audited members.

    Rule: the paper's fraction, round(n_members · paper_n / paper_pool) = 5 % of the audited
    members (1,000 of 20,000 in MIST §4.6), at least 1 and at most n_members.

    >>> vulnerable_subset_size(1010), vulnerable_subset_size(20000), vulnerable_subset_size(3)
    (50, 1000, 1)
    """
    if n_members < 1:
        raise AuditError("the vulnerable subset needs at least one audited member")
    return int(min(n_members, max(1, round(n_members * paper_n / paper_pool))))
