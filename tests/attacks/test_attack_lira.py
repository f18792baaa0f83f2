"""LiRA against scipy closed forms on constructed shadow scores."""

import numpy as np
import pytest
from scipy.stats import norm

from fedmist.attacks import AttackContext, run_attacks
from fedmist.attacks.lira import MIN_STD, lira_gaussians, lira_scores
from fedmist.attacks.signals import lira_phi
from fedmist.errors import AuditError

# 6 shadows, 2 examples, 1 augmentation. Example 0 is IN for shadows 0-2, example 1 for 3-5.
KEEP = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], dtype=bool)
SHADOW = np.array([[4.0, 0.0], [5.0, 1.0], [7.0, -1.0], [1.0, 9.0], [0.0, 10.0], [2.0, 14.0]])[..., None]
TARGET = np.array([[5.5], [3.0]])


def test_online_matches_scipy_closed_form():
    # example 0: IN {4, 5, 7}: median 5, std sqrt(14/9); OUT {1, 0, 2}: median 1, std sqrt(2/3)
    # example 1: IN {9, 10, 14}: median 10, std sqrt(14/3); OUT {0, 1, -1}: median 0, std sqrt(2/3)
    want = [
        norm.logpdf(5.5, 5, np.sqrt(14 / 9)) - norm.logpdf(5.5, 1, np.sqrt(2 / 3)),
        norm.logpdf(3.0, 10, np.sqrt(14 / 3)) - norm.logpdf(3.0, 0, np.sqrt(2 / 3)),
    ]
    np.testing.assert_allclose(lira_scores(TARGET, SHADOW, KEEP), want, rtol=1e-12)


def test_offline_is_one_sided_logcdf():
    want = [norm.logcdf((5.5 - 1) / np.sqrt(2 / 3)), norm.logcdf((3.0 - 0) / np.sqrt(2 / 3))]
    np.testing.assert_allclose(lira_scores(TARGET, SHADOW, KEEP, online=False), want, rtol=1e-12)
    # one-sided: far *below* the OUT mean is not evidence of membership (the reference's -logpdf says it is)
    low, high = lira_scores(np.array([[-5.0], [5.0]]), SHADOW, KEEP, online=False)
    assert low < high


def test_fixed_variance_pools_within_example_deviations():
    # IN deviations from each example's mean: (4,5,7)-16/3 and (9,10,14)-11; OUT: (1,0,2)-1 and (0,1,-1)-0
    dev_in = np.r_[np.array([4, 5, 7]) - 16 / 3, np.array([9, 10, 14]) - 11]
    dev_out = np.r_[np.array([1, 0, 2]) - 1, np.array([0, 1, -1]) - 0]
    sd_in, sd_out = np.sqrt(np.mean(dev_in ** 2)), np.sqrt(np.mean(dev_out ** 2))
    want = [
        norm.logpdf(5.5, 5, sd_in) - norm.logpdf(5.5, 1, sd_out),
        norm.logpdf(3.0, 10, sd_in) - norm.logpdf(3.0, 0, sd_out),
    ]
    np.testing.assert_allclose(lira_scores(TARGET, SHADOW, KEEP, fix_variance=True), want, rtol=1e-12)
    # not the reference code's np.std over all IN scores (which also used it for OUT)
    assert sd_in != pytest.approx(np.std(SHADOW[KEEP]))
    g = lira_gaussians(SHADOW, KEEP, fix_variance=True)
    np.testing.assert_allclose(g.sd_out, sd_out)
    want_off = [norm.logcdf((5.5 - 1) / sd_out), norm.logcdf(3.0 / sd_out)]
    np.testing.assert_allclose(lira_scores(TARGET, SHADOW, KEEP, online=False, fix_variance=True), want_off)


def test_augmentations_are_averaged():
    shadow = np.concatenate([SHADOW, SHADOW + 1.0], axis=2)
    target = np.concatenate([TARGET, TARGET + 1.0], axis=1)
    one = lira_scores(TARGET, SHADOW, KEEP)
    np.testing.assert_allclose(lira_scores(target, shadow, KEEP), one, rtol=1e-12)  # shift-invariant per aug
    target2 = np.concatenate([TARGET, TARGET + 2.0], axis=1)
    shifted = lira_scores(TARGET + 1.0, SHADOW, KEEP)
    np.testing.assert_allclose(lira_scores(target2, shadow, KEEP), (one + shifted) / 2, rtol=1e-12)


def test_higher_means_member_and_std_floor():
    at_in = lira_scores(np.array([[5.0], [0.0]]), SHADOW, KEEP)[0]   # at example 0's IN median
    at_out = lira_scores(np.array([[1.0], [0.0]]), SHADOW, KEEP)[0]  # at its OUT median
    assert at_in > 0 > at_out
    flat = np.zeros((4, 1, 1))
    keep = np.array([[1], [1], [0], [0]], dtype=bool)
    g = lira_gaussians(flat, keep)
    assert g.sd_in[0, 0] == MIN_STD
    assert np.isfinite(lira_scores(np.array([[3.0]]), flat, keep)).all()


def test_too_few_shadows():
    keep = np.array([[1, 0], [0, 1]], dtype=bool)
    shadow = np.zeros((2, 2, 1))
    with pytest.raises(AuditError, match="needs >= 2 OUT"):
        lira_scores(np.zeros((2, 1)), shadow, keep)
    # One score per side: the pooled within-example variance would be exactly 0, not an estimate.
    with pytest.raises(AuditError, match=r"fixed variance\) needs >= 2 OUT"):
        lira_scores(np.zeros((2, 1)), shadow + np.arange(2)[:, None, None], keep, online=False, fix_variance=True)
    keep4 = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=bool)
    shadow4 = np.arange(8.0).reshape(4, 2, 1)
    assert np.isfinite(lira_scores(np.zeros((2, 1)), shadow4, keep4, fix_variance=True)).all()


def test_registered_variants_use_phi_of_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 3)) * 3
    shadow_logits = rng.normal(size=(4, 8, 3)) * 3
    labels = rng.integers(0, 3, size=8)
    keep = np.tile(np.array([[1], [1], [0], [0]], dtype=bool), (1, 8))
    ctx = AttackContext(logits=logits, labels=labels, shadow_logits=shadow_logits, keep=keep)
    got = run_attacks(["lira_online", "lira_offline_fixed"], ctx)
    np.testing.assert_allclose(got["lira_online"], lira_scores(lira_phi(logits, labels)[:, None],
                                                               lira_phi(shadow_logits, labels)[..., None], keep))
    np.testing.assert_allclose(got["lira_offline_fixed"], lira_scores(
        lira_phi(logits, labels)[:, None], lira_phi(shadow_logits, labels)[..., None], keep, online=False,
        fix_variance=True))
