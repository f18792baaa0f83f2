"""Entropy attack: members get more peaked (lower-entropy) predictions; label-free."""

from __future__ import annotations

import numpy as np

from fedmist.attacks.registry import AttackSpec, register_attack
from fedmist.attacks.signals import entropy


def entropy_scores(logits: np.ndarray) -> np.ndarray:
    """(n, K) logits -> (n,) −entropy (nats), higher = member.

    >>> round(float(entropy_scores(np.array([[0.0, 0.0]]))[0]), 6)
    -0.693147
    """
    return -entropy(logits)


register_attack(AttackSpec(
    name="entropy",
    description="negative prediction entropy of the target (ignores the label)",
    needs=frozenset({"outputs"}),
    score=lambda ctx: entropy_scores(ctx.logits),
))
