"""Logit-derived signals against closed forms, including logits where float32 softmax fails."""

import numpy as np
import pytest
from scipy.special import log_softmax, softmax
from scipy.stats import entropy as scipy_entropy

from fedmist.attacks.signals import (entropy, lira_phi, log_one_minus_softmax, modified_entropy,
                                     true_class_logprob)
from fedmist.errors import AuditError


def test_phi_closed_form():
    z = np.array([[2.0, 0.0, -1.0], [2.0, 0.0, -1.0]])
    phi = lira_phi(z, np.array([0, 2]))
    assert phi[0] == pytest.approx(2.0 - np.log(1.0 + np.exp(-1.0)), abs=1e-12)
    assert phi[1] == pytest.approx(-1.0 - np.log(np.exp(2.0) + 1.0), abs=1e-12)
    # φ = log p_y − log(1 − p_y) on the same vector, computed the naive way
    p = softmax(z[0])
    assert phi[0] == pytest.approx(np.log(p[0]) - np.log(1 - p[0]), abs=1e-12)


def test_phi_survives_saturated_softmax():
    z = np.array([[60.0, 0.0, 0.0], [60.0, 0.0, 0.0]])
    assert softmax(z.astype(np.float32), axis=1)[0, 0] == np.float32(1.0)  # the naive route breaks
    phi = lira_phi(z, np.array([0, 1]))
    assert phi[0] == pytest.approx(60.0 - np.log(2.0), abs=1e-12)
    assert phi[1] == pytest.approx(-np.logaddexp(60.0, 0.0), abs=1e-12)


def test_phi_broadcasts_over_shadows():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 5, 4)) * 5
    y = rng.integers(0, 4, size=5)
    stacked = lira_phi(z, y)
    assert stacked.shape == (3, 5)
    for s in range(3):
        np.testing.assert_allclose(stacked[s], lira_phi(z[s], y), rtol=0, atol=1e-12)


def test_true_class_logprob_matches_log_softmax_and_stays_accurate():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 5)) * 3
    y = rng.integers(0, 5, size=6)
    np.testing.assert_allclose(true_class_logprob(z, y), log_softmax(z, axis=1)[np.arange(6), y], atol=1e-12)
    # p_y = 1 − 2e-50: log p_y ≈ −2e-50, which log_softmax rounds to 0
    lp = true_class_logprob(np.array([[115.0, 0.0, 0.0]]), np.array([0]))[0]
    assert lp == pytest.approx(-2 * np.exp(-115.0), rel=1e-9)


def test_log_one_minus_softmax():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(4, 6))
    np.testing.assert_allclose(log_one_minus_softmax(z), np.log1p(-softmax(z, axis=1)), atol=1e-12)
    top = log_one_minus_softmax(np.array([[40.0, 0.0, 0.0]]))[0, 0]
    assert top == pytest.approx(-40.0 + np.log(2.0) - np.log1p(2 * np.exp(-40.0)), abs=1e-12)


def test_entropies_against_direct_formulas():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(5, 4)) * 2
    y = rng.integers(0, 4, size=5)
    p = softmax(z, axis=1)
    np.testing.assert_allclose(entropy(z), scipy_entropy(p, axis=1), atol=1e-12)
    direct = []
    for row, label in zip(p, y):
        others = sum(-row[i] * np.log(1 - row[i]) for i in range(4) if i != label)
        direct.append(-(1 - row[label]) * np.log(row[label]) + others)
    np.testing.assert_allclose(modified_entropy(z, y), direct, atol=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(AuditError, match="labels must lie"):
        lira_phi(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(AuditError, match="does not match"):
        lira_phi(np.zeros((2, 3)), np.array([0]))
    with pytest.raises(AuditError, match="NaN"):
        entropy(np.array([[np.nan, 0.0]]))
