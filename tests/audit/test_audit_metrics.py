"""ROC metrics against hand-computed points and brute-force counts."""

import itertools

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from fedmist.errors import AuditError
from fedmist.audit.metrics import (gaussian_nonoverlap, most_vulnerable_subset, roc_metrics, tpr_at_fpr,
                                   vulnerable_subset_size)

MEMBERS = np.array([9.5, 9, 8, 7, 6, 5, 4, 3, 2, 1])
NONMEMBERS = np.array([8.5, 4.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
SCORES = np.r_[MEMBERS, NONMEMBERS]
IS_MEMBER = np.r_[np.ones(10, bool), np.zeros(10, bool)]


def test_hand_computed_roc_points():
    # FPR <= 0.1 allows 1 false positive (8.5): threshold above 4.5 keeps 9.5, 9, 8, 7, 6, 5 -> TPR 0.6
    # FPR <= 0.05 allows none: threshold above 8.5 keeps 9.5, 9 -> TPR 0.2
    m = roc_metrics(SCORES, IS_MEMBER, fprs=(0.05, 0.1), n_bootstrap=0)
    assert m["at_fpr"]["0.1"]["tpr"] == pytest.approx(0.6)
    assert m["at_fpr"]["0.1"]["plr"] == pytest.approx(6.0)
    assert m["at_fpr"]["0.1"]["max_false_positives"] == 1
    assert m["at_fpr"]["0.05"]["tpr"] == pytest.approx(0.2)
    assert m["at_fpr"]["0.05"]["plr"] == pytest.approx(4.0)  # target FPR as the denominator
    assert m["at_fpr"]["0.05"]["max_false_positives"] == 0
    assert m["fpr_resolution"] == pytest.approx(0.1) and m["n_nonmembers"] == 10 and m["n_members"] == 10
    # members beat 10,10,9,9,9,9,8,8,8,8 non-members: 88 of 100 pairs
    assert m["auc"] == pytest.approx(0.88)
    # the shuffle of examples does not matter
    perm = np.random.default_rng(0).permutation(20)
    assert tpr_at_fpr(SCORES[perm], IS_MEMBER[perm], 0.1) == pytest.approx(0.6)


def test_auc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, size=40).astype(float)  # many ties
    member = rng.random(40) < 0.5
    wins = [1.0 if a > b else 0.5 if a == b else 0.0
            for a, b in itertools.product(scores[member], scores[~member])]
    assert roc_metrics(scores, member, n_bootstrap=0)["auc"] == pytest.approx(np.mean(wins))


def test_bootstrap_intervals():
    rng = np.random.default_rng(2)
    member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    scores = rng.normal(size=600) + member
    a = roc_metrics(scores, member, fprs=(0.01, 0.1), n_bootstrap=100, seed=5)
    b = roc_metrics(scores, member, fprs=(0.01, 0.1), n_bootstrap=100, seed=5)
    assert a == b
    lo, hi = a["auc_ci"]
    assert lo < a["auc"] < hi and hi - lo < 0.15
    for point in a["at_fpr"].values():
        assert point["tpr_ci"][0] <= point["tpr"] <= point["tpr_ci"][1]
        assert point["plr_ci"] == pytest.approx([v / point["fpr"] for v in point["tpr_ci"]])


def test_bad_inputs():
    with pytest.raises(AuditError, match="both members and non-members"):
        roc_metrics(np.zeros(3), np.ones(3, bool))
    with pytest.raises(AuditError, match="bool"):
        roc_metrics(np.zeros(2), np.array([0, 1]))
    with pytest.raises(AuditError, match="FPRs"):
        roc_metrics(SCORES, IS_MEMBER, fprs=(0.0,))


@pytest.mark.parametrize("mu1,sd1,mu2,sd2", [(0, 1, 2, 1), (0, 1, 0, 3), (1, 0.5, -1, 2), (0, 1, 0, 1), (5, 2, 0, 0.1)])
def test_nonoverlap_matches_numerical_integration(mu1, sd1, mu2, sd2):
    gap = lambda x: abs(norm.pdf(x, mu1, sd1) - norm.pdf(x, mu2, sd2))  # noqa: E731
    want = 0.5 * quad(gap, -60, 60, limit=400, points=[mu1, mu2])[0]
    assert gaussian_nonoverlap(mu1, sd1, mu2, sd2) == pytest.approx(want, abs=1e-6)


def test_most_vulnerable_subset():
    mu_in = np.array([0.0, 3.0, 1.0, 10.0, 0.0])
    sd = np.ones(5)
    mu_out = np.zeros(5)
    assert most_vulnerable_subset(mu_in, sd, mu_out, sd, 3).tolist() == [3, 1, 2]
    # (n, A): the non-overlap is averaged over augmentations
    two_aug = most_vulnerable_subset(np.c_[mu_in, mu_in], np.c_[sd, sd], np.c_[mu_out, mu_out], np.c_[sd, sd], 2)
    assert two_aug.tolist() == [3, 1]
    with pytest.raises(AuditError):
        most_vulnerable_subset(mu_in, sd, mu_out, sd, 6)


def test_vulnerable_subset_size_scales_the_papers_fraction():
    assert vulnerable_subset_size(20000) == 1000  # the paper's CIFAR setting
    assert vulnerable_subset_size(1010) == 50     # Location: 5 % of the audited members
    assert vulnerable_subset_size(4) == 1
    assert vulnerable_subset_size(100, paper_n=1000, paper_pool=4000) == 25
