"""``lira_mistcode``: the MIST code's LiRA scoring, checked on a hand-computed tiny example."""

import math

import numpy as np
import pytest

from fedmist.attacks import ATTACKS, AttackContext, run_attacks
from fedmist.attacks.lira_mistcode import EPS, FIT_SHADOWS, IN_FRACTION, fit_sets, mistcode_ratio, true_class_prob


def _pdf(x: float, mu: float, sd: float) -> float:  # the code's normpdf
    var = sd ** 2
    return math.exp(-(x - mu) ** 2 / (2 * var)) / (2 * math.pi * var) ** 0.5


# 4 shadows, 3 points; raw true-class probabilities (not logits).
SHADOW_P = np.array([[0.9, 0.6, 0.2],
                     [0.7, 0.6, 0.4],
                     [0.5, 0.3, 0.6],
                     [0.3, 0.5, 0.8]])
FIT_IN = np.array([[1, 1, 1], [1, 1, 1], [0, 0, 1], [0, 0, 1]], dtype=bool)
FIT_OUT = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 0], [1, 0, 0]], dtype=bool)
TARGET_P = np.array([0.8, 0.6, 0.5])


def test_ratio_by_hand():
    got = mistcode_ratio(TARGET_P, SHADOW_P, FIT_IN, FIT_OUT)
    # point 0: IN {0.9, 0.7}: mean 0.8, std 0.1; OUT {0.5, 0.3}: mean 0.4, std 0.1; target 0.8
    #   pdf_in = 1/(0.1·√(2π)) = 3.98942; pdf_out = pdf_in·e^-8; ratio ≈ e^8 = 2980.96
    p_in, p_out = 1 / (0.1 * math.sqrt(2 * math.pi)), math.exp(-8) / (0.1 * math.sqrt(2 * math.pi))
    assert got[0] == pytest.approx(p_in / (p_out + EPS), rel=1e-6)
    assert got[0] == pytest.approx(math.exp(8), rel=1e-6)
    # point 1: IN {0.6, 0.6}: std 0 -> σ = 1e-25 and the target sits on the mean: pdf_in = 1/(1e-25·√(2π));
    #   one OUT shadow {0.3}: σ = 1e-25, the target 0.3 away: pdf_out = 0 -> ratio = pdf_in / 1e-25
    assert got[1] == pytest.approx(_pdf(0.6, 0.6, EPS) / EPS, rel=1e-6)
    # point 2: no OUT shadow in its fitting set: the code's mean of nothing is NaN -> score 0
    assert got[2] == 0.0
    # the same numbers as the code's loop (model_utils.get_blackbox_auc_lira) for point 0
    code = _pdf(0.8, 0.8, np.std([0.9, 0.7]) + EPS) / (_pdf(0.8, 0.4, np.std([0.5, 0.3]) + EPS) + EPS)
    assert got[0] == pytest.approx(code, rel=1e-12)


def test_raw_probability_not_logit():
    logits = np.array([[2.0, 0.0], [0.0, 1.0]])
    p = true_class_prob(logits, np.array([0, 0]))
    np.testing.assert_allclose(p, [1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1))], rtol=1e-12)
    stacked = true_class_prob(np.stack([logits, logits[::-1]]), np.array([0, 0]))
    assert stacked.shape == (2, 2)


def test_fit_sets_follow_the_codes_in_fraction():
    S, n = 64, 4000
    rng = np.random.default_rng(0)
    keep = np.zeros((S, n), dtype=bool)
    for j in range(n):  # balanced, as fedmist's shadows are
        keep[rng.choice(S, S // 2, replace=False), j] = True
    fit_in, fit_out = fit_sets(keep, np.random.default_rng(1))
    assert not (fit_in & ~keep).any() and not (fit_out & keep).any()
    sizes = fit_in.sum(0) + fit_out.sum(0)
    assert (sizes == FIT_SHADOWS).all()  # 25: the code fits on a random half of its 50 shadows
    share_out = fit_out.sum() / sizes.sum()
    assert share_out == pytest.approx(1 - IN_FRACTION, abs=0.01)  # ~1/9 OUT, ~89 % IN
    # few OUT shadows per point, as in the code: 25/9 = 2.8 on average, none for (8/9)^25 = 5 %
    assert fit_out.sum(0).mean() == pytest.approx(25 / 9, abs=0.15)
    assert (fit_out.sum(0) == 0).mean() == pytest.approx((8 / 9) ** 25, abs=0.015)
    # with few shadows (fedmist's 16: 8 IN, 8 OUT per point) the IN side takes what there is
    small = keep[:16, :200].copy()
    small[:] = False
    small[:8] = True
    fin, fout = fit_sets(small, np.random.default_rng(2))
    assert (fin.sum(0) == 8).all() and (fout.sum(0) <= 8).all()


def test_registered_and_runs_on_a_context():
    spec = ATTACKS["lira_mistcode"]
    assert spec.min_shadows == 4 and "shadows" in spec.needs
    rng = np.random.default_rng(3)
    S, n, K = 8, 40, 3
    keep = np.zeros((S, n), dtype=bool)
    for j in range(n):
        keep[rng.choice(S, S // 2, replace=False), j] = True
    labels = rng.integers(0, K, n)
    shadow_logits = rng.normal(size=(S, n, K))
    shadow_logits[np.nonzero(keep)[0], np.nonzero(keep)[1], labels[np.nonzero(keep)[1]]] += 2.0  # IN: confident
    ctx = AttackContext(logits=rng.normal(size=(n, K)), labels=labels, shadow_logits=shadow_logits, keep=keep, seed=5)
    a = run_attacks(["lira_mistcode"], ctx)["lira_mistcode"]
    b = run_attacks(["lira_mistcode"], ctx)["lira_mistcode"]
    assert a.shape == (n,) and np.isfinite(a).all() and (a >= 0).all()
    np.testing.assert_array_equal(a, b)  # seeded by the context
