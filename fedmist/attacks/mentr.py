"""Modified entropy (Song & Mittal 2021) with class-specific thresholds from shadow models.

Mentr is low for confidently correct predictions and high for confidently wrong ones, which
plain entropy cannot tell apart. Song & Mittal predict "member" when Mentr(x, y) ≤ τ_y, with one
threshold per class fitted on shadow IN/OUT data. For a ROC curve we need a score, not a
decision, so the score is the margin τ_y − Mentr(x, y): its sign is the paper's decision and its
size orders examples within a class. Without shadows every τ_y is 0 and the score is −Mentr.
"""

from __future__ import annotations

import numpy as np

from fedmist.attacks.context import AttackContext
from fedmist.attacks.registry import AttackSpec, register_attack
from fedmist.attacks.signals import modified_entropy


def best_threshold(values: np.ndarray, is_in: np.ndarray) -> float:
    """τ maximising balanced accuracy of "IN iff value ≤ τ" on shadow data (1-D arrays).

    Ties between candidate thresholds go to the smallest τ. With only one kind of label the
    decision cannot be fitted and the median is returned.

    >>> best_threshold(np.array([0.1, 0.2, 0.9, 1.0]), np.array([True, True, False, False]))
    0.2
    """
    values = np.asarray(values, dtype=np.float64)
    is_in = np.asarray(is_in, dtype=bool)
    n_in, n_out = int(is_in.sum()), int((~is_in).sum())
    if n_in == 0 or n_out == 0:
        return float(np.median(values))
    order = np.argsort(values, kind="stable")
    v, lab = values[order], is_in[order]
    tp = np.cumsum(lab)          # IN at or below each candidate
    fp = np.cumsum(~lab)         # OUT at or below each candidate
    last = np.r_[v[1:] != v[:-1], True]  # a threshold includes all tied values
    # balanced accuracy = (tp/n_in + 1 - fp/n_out)/2, ranked exactly in integers: tp·n_out − fp·n_in
    gain = np.where(last, tp * n_out - fp * n_in, np.iinfo(np.int64).min)
    return float(v[int(np.argmax(gain))])


def mentr_scores(logits: np.ndarray, labels: np.ndarray, shadow_logits: np.ndarray | None = None,
                 keep: np.ndarray | None = None) -> np.ndarray:
    """(n, K) target logits, (n,) labels, optional (S, n, K) shadow logits + (S, n) keep
    -> (n,) τ_y − Mentr, higher = member.

    τ_y is fitted on the shadow outputs of the audited examples of class y.
    """
    mentr = modified_entropy(logits, labels)
    if shadow_logits is None or keep is None:
        return -mentr
    shadow_mentr = modified_entropy(shadow_logits, labels)        # (S, n)
    cls = np.broadcast_to(np.asarray(labels), shadow_mentr.shape)
    tau = np.zeros(logits.shape[1])
    for c in np.unique(labels):
        sel = cls == c
        tau[c] = best_threshold(shadow_mentr[sel], keep[sel])
    return tau[labels] - mentr


def _score(ctx: AttackContext) -> np.ndarray:
    shadow = ctx.shadow_logits if ctx.keep is not None else None
    return mentr_scores(ctx.logits, ctx.labels, shadow, ctx.keep)


register_attack(AttackSpec(
    name="mentr",
    description="Song & Mittal modified entropy; class thresholds fitted on shadow logits when present",
    needs=frozenset({"outputs"}),
    score=_score,
))
