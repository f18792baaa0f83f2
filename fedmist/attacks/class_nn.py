"""Class-NN (Shokri et al. 2017): one attack classifier per class, trained on shadow outputs.

Each example's view is its sorted prediction vector, as in Shokri et al.'s attack models, on a
log scale (log-probabilities separate 0.999 from 0.999999, which matters for confident models),
keeping the ``top`` largest entries, with the true class's log-probability in front so that the
classifier can tell confidently right from confidently wrong. The classifiers are trained on
the shadow models' views labelled IN/OUT and score the target's views out of sample (see
``crossfit``); the score is the classifier's P(member).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from fedmist.attacks.context import AttackContext
from fedmist.attacks.crossfit import crossfit_scores, mlp_classifier
from fedmist.attacks.registry import AttackSpec, attack_seed, register_attack
from fedmist.attacks.signals import true_class_logprob


def class_nn_features(logits: np.ndarray, labels: np.ndarray, top: int = 10) -> np.ndarray:
    """(..., n, K) logits -> (..., n, 1 + min(top, K)): [log p_y, sorted log-probs, descending]."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    ranked = -np.sort(-logp, axis=-1)[..., :top]
    return np.concatenate([true_class_logprob(logits, labels)[..., None], ranked], axis=-1)


def class_nn_scores(logits: np.ndarray, labels: np.ndarray, shadow_logits: np.ndarray, keep: np.ndarray,
                    rng: np.random.Generator, folds: int = 5, hidden: tuple[int, ...] = (64,),
                    max_iter: int = 200, top: int = 10) -> np.ndarray:
    """(n, K) target logits, (n,) labels, (S, n, K) shadow logits, (S, n) keep -> (n,) P(member)."""
    seed = int(rng.integers(2**31))
    return crossfit_scores(
        class_nn_features(shadow_logits, labels, top), keep, class_nn_features(logits, labels, top),
        make_model=lambda: mlp_classifier(hidden, max_iter, seed), rng=rng, folds=folds, groups=labels,
    )


def _score(ctx: AttackContext) -> np.ndarray:
    return class_nn_scores(ctx.logits, ctx.labels, ctx.shadow_logits, ctx.keep, attack_seed(ctx, "class_nn"))


register_attack(AttackSpec(
    name="class_nn",
    description="Shokri et al.: per-class MLP attack models on sorted shadow predictions (cross-fitted)",
    needs=frozenset({"outputs", "shadows"}),
    score=_score,
    fields=("shadow_logits",),
))
