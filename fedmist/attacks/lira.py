"""LiRA (Carlini et al. 2022): per-example likelihood ratio of the target's φ under Gaussians
fitted to shadow models trained with (IN) and without (OUT) the example.

Follows the reference code (tensorflow/privacy ``research/mi_lira_2021/plot.py``): the
Gaussian's centre is the median over shadows, its scale the standard deviation, per example and
augmentation, and the scores are averaged over augmentations. Two deliberate differences:

- The fixed-variance option uses one *within-example* standard deviation per side, pooled over
  all examples (√ of the mean squared deviation from each example's own mean). The reference
  takes ``np.std`` over all scores at once, which adds the spread *between* examples, and uses the
  IN value for the OUT side as well.
- The offline attack is the paper's one-sided test: score = log Φ((φ − μ_out)/σ_out). The
  reference's ``-logpdf`` is two-sided and flags examples far *below* the OUT mean as members.

Standard deviations are floored at ``MIN_STD`` (the reference adds 1e-30, which overflows when
all shadows agree).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.stats import norm

from fedmist.attacks.context import AttackContext
from fedmist.attacks.registry import AttackSpec, register_attack
from fedmist.errors import AuditError

MIN_STD = 1e-6


@dataclass(frozen=True)
class Gaussians:
    """Per-example IN/OUT Gaussians, each array (n, A); NaN where a side has no shadows."""

    mu_in: np.ndarray
    sd_in: np.ndarray
    mu_out: np.ndarray
    sd_out: np.ndarray


def _side(scores: np.ndarray, mask: np.ndarray, fix_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Median and standard deviation over the shadows selected by ``mask`` (S, n)."""
    vals = np.where(mask[..., None], scores, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN on purpose
        mu = np.nanmedian(vals, axis=0)
        if fix_variance:
            dev = vals - np.nanmean(vals, axis=0)
            sd = np.full(mu.shape, np.sqrt(np.nanmean(dev ** 2)))
        else:
            sd = np.nanstd(vals, axis=0)
    return mu, np.maximum(sd, MIN_STD)


def lira_gaussians(shadow_scores: np.ndarray, keep: np.ndarray, fix_variance: bool = False) -> Gaussians:
    """(S, n, A) shadow φ and (S, n) bool keep -> the IN and OUT Gaussians of every example."""
    shadow_scores = np.asarray(shadow_scores, dtype=np.float64)
    keep = np.asarray(keep)
    if shadow_scores.ndim != 3 or keep.dtype != bool or keep.shape != shadow_scores.shape[:2]:
        raise AuditError(f"need shadow scores (S, n, A) and bool keep (S, n), "
                         f"got {shadow_scores.shape} and {keep.shape}")
    mu_in, sd_in = _side(shadow_scores, keep, fix_variance)
    mu_out, sd_out = _side(shadow_scores, ~keep, fix_variance)
    return Gaussians(mu_in, sd_in, mu_out, sd_out)


def _check_counts(keep: np.ndarray, online: bool, fix_variance: bool) -> None:
    # Two scores per side for every example, fixed variance too: the pooled variance is built from
    # within-example deviations, and an example with one score contributes a deviation of 0 (with
    # 2 balanced shadows every example has one per side, the pooled σ is 0 and every score saturates).
    need = 2
    sides = [("OUT", (~keep).sum(axis=0))] + ([("IN", keep.sum(axis=0))] if online else [])
    for side, counts in sides:
        short = int((counts < need).sum())
        if short:
            raise AuditError(
                f"LiRA{' (fixed variance)' if fix_variance else ''} needs >= {need} {side} shadow(s) per "
                f"example; {short} examples have fewer (use more shadows: 4 or more for a balanced audit)")


def lira_scores(target_scores: np.ndarray, shadow_scores: np.ndarray, keep: np.ndarray,
                online: bool = True, fix_variance: bool = False) -> np.ndarray:
    """LiRA membership scores, higher = member.

    ``target_scores`` (n, A) and ``shadow_scores`` (S, n, A) are φ per augmentation; ``keep``
    (S, n) bool. Online: mean over A of log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out).
    Offline: mean over A of log Φ((φ − μ_out)/σ_out). Returns (n,) float64.
    """
    target_scores = np.asarray(target_scores, dtype=np.float64)
    g = lira_gaussians(shadow_scores, keep, fix_variance)
    if target_scores.shape != g.mu_out.shape:
        raise AuditError(f"target scores {target_scores.shape} do not match shadow scores (n, A) = {g.mu_out.shape}")
    _check_counts(np.asarray(keep), online, fix_variance)
    if online:
        ratio = norm.logpdf(target_scores, g.mu_in, g.sd_in) - norm.logpdf(target_scores, g.mu_out, g.sd_out)
    else:
        ratio = norm.logcdf((target_scores - g.mu_out) / g.sd_out)
    return ratio.mean(axis=1)


def _score(ctx: AttackContext, online: bool, fix_variance: bool) -> np.ndarray:
    return lira_scores(ctx.target_phi(), ctx.shadow_phi(), ctx.keep, online=online, fix_variance=fix_variance)


for _name, _online, _fixed, _what in [
    ("lira_online", True, False, "online: per-example IN and OUT Gaussians of phi"),
    ("lira_offline", False, False, "offline: one-sided test against per-example OUT Gaussians"),
    ("lira_online_fixed", True, True, "online with one pooled variance per side"),
    ("lira_offline_fixed", False, True, "offline with one pooled OUT variance"),
]:
    register_attack(AttackSpec(
        name=_name,
        description=f"Carlini et al. LiRA {_what}",
        needs=frozenset({"outputs", "shadows"}),
        score=partial(_score, online=_online, fix_variance=_fixed),
        min_shadows=4,  # see _check_counts
    ))
