"""Output-only attacks (loss, confidence, entropy, modified entropy) against direct formulas."""

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy

from fedmist.attacks import AttackContext, run_attacks
from fedmist.attacks.mentr import best_threshold, mentr_scores
from fedmist.attacks.signals import modified_entropy

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(10, 4)) * 2
LABELS = RNG.integers(0, 4, size=10)


def test_loss_confidence_entropy():
    p = softmax(LOGITS, axis=1)
    got = run_attacks(["loss", "confidence", "entropy"], AttackContext(logits=LOGITS, labels=LABELS))
    np.testing.assert_allclose(got["loss"], np.log(p[np.arange(10), LABELS]), atol=1e-12)
    np.testing.assert_allclose(got["confidence"], p[np.arange(10), LABELS], atol=1e-12)
    np.testing.assert_allclose(got["entropy"], -scipy_entropy(p, axis=1), atol=1e-12)


def test_best_threshold_by_hand():
    # IN iff value <= tau. Values 1..6, IN = {1, 2, 4}: tau=2 -> 2/3 IN right, 3/3 OUT right = 0.833;
    # tau=4 -> 3/3, 2/3 = 0.833 (tie, smallest wins); tau=1 -> 1/3, 1 = 0.667
    assert best_threshold(np.array([6., 5., 4., 3., 2., 1.]), np.array([0, 0, 1, 0, 1, 1], bool)) == 2.0
    # ties between values: both 2.0's are in or out together
    assert best_threshold(np.array([1., 2., 2., 3.]), np.array([1, 1, 0, 0], bool)) == 1.0


def test_mentr_without_shadows_is_negative_mentr():
    np.testing.assert_allclose(mentr_scores(LOGITS, LABELS), -modified_entropy(LOGITS, LABELS))
    got = run_attacks(["mentr"], AttackContext(logits=LOGITS, labels=LABELS))["mentr"]
    np.testing.assert_allclose(got, -modified_entropy(LOGITS, LABELS))


def test_mentr_class_thresholds_from_shadows():
    # 2 classes; shadow Mentr per class separates IN/OUT at different levels
    labels = np.array([0, 0, 1, 1])
    keep = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)
    shadow = np.stack([np.array([[5., 0.], [0., 0.], [0., 5.], [0., 0.]]),
                       np.array([[0., 0.], [5., 0.], [0., 0.], [0., 5.]])])
    target = np.array([[3., 0.], [1., 0.], [0., 3.], [0., 1.]])
    m_shadow = modified_entropy(shadow, labels)
    tau = [best_threshold(m_shadow[:, labels == c].ravel(), keep[:, labels == c].ravel()) for c in (0, 1)]
    want = np.array(tau)[labels] - modified_entropy(target, labels)
    ctx = AttackContext(logits=target, labels=labels, shadow_logits=shadow, keep=keep)
    np.testing.assert_allclose(run_attacks(["mentr"], ctx)["mentr"], want)
    assert tau[0] == pytest.approx(modified_entropy(np.array([[5., 0.]]), np.array([0]))[0])
