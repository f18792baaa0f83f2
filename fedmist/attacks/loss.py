"""LOSS (Yeom et al. 2018): members have lower loss; score = −cross-entropy = log p_y."""

from __future__ import annotations

import numpy as np

from fedmist.attacks.registry import AttackSpec, register_attack
from fedmist.attacks.signals import true_class_logprob


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, K) logits, (n,) labels -> (n,) −CE, higher = member.

    >>> round(float(loss_scores(np.array([[0.0, 0.0]]), np.array([1]))[0]), 6)
    -0.693147
    """
    return true_class_logprob(logits, labels)


register_attack(AttackSpec(
    name="loss",
    description="Yeom et al.: global threshold on the target's loss (score = -cross-entropy)",
    needs=frozenset({"outputs"}),
    score=lambda ctx: loss_scores(ctx.logits, ctx.labels),
))
