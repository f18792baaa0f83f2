"""Confidence attack: members get a higher softmax probability on their true class."""

from __future__ import annotations

import numpy as np

from fedmist.attacks.registry import AttackSpec, register_attack
from fedmist.attacks.signals import true_class_logprob


def confidence_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, K) logits, (n,) labels -> (n,) p_y, higher = member.

    Ranks exactly like the loss attack except where p_y rounds to 1.0 in float64, where it ties.

    >>> float(confidence_scores(np.array([[0.0, 0.0]]), np.array([0]))[0])
    0.5
    """
    return np.exp(true_class_logprob(logits, labels))


register_attack(AttackSpec(
    name="confidence",
    description="true-class softmax probability of the target (no shadows)",
    needs=frozenset({"outputs"}),
    score=lambda ctx: confidence_scores(ctx.logits, ctx.labels),
))
