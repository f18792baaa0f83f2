"""RMIA (Zarifzadeh et al. 2024): compare the target's likelihood ratio on x with population z.

Pr(x|θ) is the target's true-class probability; Pr(x) its average over reference models (the
shadows). Online, Pr(x) averages all references (each x is IN for half of them). Offline, only
OUT references exist for x, and Pr(x) = ((1 + a)·Pr_OUT(x) + (1 − a)) / 2 approximates the
missing IN half linearly (``a`` = 0.3, ML Privacy Meter's default). The score of x is the
fraction of population points z with [Pr(x|θ)/Pr(x)] / [Pr(z|θ)/Pr(z)] ≥ γ.

For a fixed set of z the fraction is a non-decreasing function of x's own ratio, so it ranks x
like the ratio does except where it saturates at 0 or 1 and ties many examples; a bonus below one
step of the fraction, increasing in the ratio, breaks those ties in the ratio's order.

The z samples are the given population points (``pop_*`` in the context), or else every other
audited example (leave-one-out), which treats members and non-members alike and so reveals
nothing about who is which.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy.special import logsumexp

from fedmist.attacks.context import AttackContext
from fedmist.attacks.registry import AttackSpec, register_attack
from fedmist.attacks.signals import true_class_logprob
from fedmist.errors import AuditError

OFFLINE_A = 0.3


def log_pr_ref(ref_logp: np.ndarray, keep: np.ndarray | None, offline: bool, a: float) -> np.ndarray:
    """log Pr(x) from (S, n) reference log-probabilities; ``keep`` (S, n) marks IN references.

    Online: log of the mean over all references. Offline: the mean over OUT references (all of
    them when ``keep`` is None) mapped through ((1 + a)·p + (1 − a)) / 2.
    """
    mask = np.ones(ref_logp.shape, dtype=bool) if (keep is None or not offline) else ~keep
    counts = mask.sum(axis=0)
    if (counts == 0).any():
        side = "OUT " if offline else ""
        raise AuditError(f"RMIA: {int((counts == 0).sum())} examples have no {side}reference model")
    log_mean = logsumexp(np.where(mask, ref_logp, -np.inf), axis=0) - np.log(counts)
    if not offline or a == 1.0:
        return log_mean
    return np.logaddexp(np.log((1 + a) / 2) + log_mean, np.log((1 - a) / 2))


def rmia_scores(logits: np.ndarray, labels: np.ndarray, shadow_logits: np.ndarray, keep: np.ndarray,
                offline: bool = False, a: float = OFFLINE_A, gamma: float = 1.0,
                pop_logits: np.ndarray | None = None, y_pop: np.ndarray | None = None,
                pop_shadow_logits: np.ndarray | None = None, pop_keep: np.ndarray | None = None) -> np.ndarray:
    """(n, K) target logits, (n,) labels, (S, n, K) reference logits, (S, n) keep -> (n,) scores in
    [0, 1 + 1/(m+1)), higher = member. Population: (m, K) target logits, (m,) labels and
    (S, m, K) reference logits (``pop_keep`` (S, m) if some references trained on them).
    """
    if not 0.0 <= a <= 1.0 or gamma <= 0:
        raise AuditError(f"RMIA needs 0 <= a <= 1 and gamma > 0, got a={a}, gamma={gamma}")
    lr_x = true_class_logprob(logits, labels) - log_pr_ref(true_class_logprob(shadow_logits, labels), keep, offline, a)
    if pop_logits is None:
        lr_z, self_pairs = lr_x, True
    else:
        if y_pop is None or pop_shadow_logits is None:
            raise AuditError("RMIA population data needs labels and reference-model logits")
        ref = true_class_logprob(pop_shadow_logits, y_pop)
        lr_z = true_class_logprob(pop_logits, y_pop) - log_pr_ref(ref, pop_keep, offline, a)
        self_pairs = False
    m = len(lr_z) - int(self_pairs)
    if m < 1:
        raise AuditError("RMIA needs at least one population point z")
    counts = np.searchsorted(np.sort(lr_z), lr_x - np.log(gamma), side="right").astype(np.float64)
    if self_pairs and gamma <= 1.0:
        counts -= 1.0  # x compared with itself: ratio 1 >= gamma always counted, drop it
    bonus = (np.arctan(lr_x) / np.pi + 0.5) / (m + 1)
    return counts / m + bonus


def _score(ctx: AttackContext, offline: bool) -> np.ndarray:
    return rmia_scores(ctx.logits, ctx.labels, ctx.shadow_logits, ctx.keep, offline=offline,
                       pop_logits=ctx.pop_logits, y_pop=ctx.y_pop, pop_shadow_logits=ctx.pop_shadow_logits)


register_attack(AttackSpec(
    name="rmia",
    description="Zarifzadeh et al. RMIA, shadows as reference models (online: IN and OUT), gamma=1",
    needs=frozenset({"outputs", "shadows"}),
    score=partial(_score, offline=False),
    fields=("shadow_logits",),
))
register_attack(AttackSpec(
    name="rmia_offline",
    description=f"RMIA with OUT reference models only, Pr(x) approximated with a={OFFLINE_A}",
    needs=frozenset({"outputs", "shadows"}),
    score=partial(_score, offline=True),
    fields=("shadow_logits",),
))
