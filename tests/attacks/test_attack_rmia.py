"""RMIA against a brute-force pairwise implementation of the paper's formula."""

import numpy as np
import pytest
from scipy.special import softmax

from fedmist.attacks import AttackContext, run_attacks
from fedmist.attacks.rmia import OFFLINE_A, rmia_scores
from fedmist.errors import AuditError

RNG = np.random.default_rng(0)
N, S, K = 12, 6, 3
LOGITS = RNG.normal(size=(N, K)) * 2
REFS = RNG.normal(size=(S, N, K)) * 2
LABELS = RNG.integers(0, K, size=N)
KEEP = np.argsort(RNG.random((S, N)), axis=0) < S // 2


def _prob(logits, labels):
    return softmax(logits, axis=-1)[..., np.arange(len(labels)), labels]


def _brute(offline: bool, a: float, gamma: float, pop=None):
    p_x = _prob(LOGITS, LABELS)
    ref = _prob(REFS, LABELS)
    if offline:
        pr_x = np.array([((1 + a) * ref[~KEEP[:, j], j].mean() + (1 - a)) / 2 for j in range(N)])
    else:
        pr_x = ref.mean(axis=0)
    ratio_x = p_x / pr_x
    if pop is None:
        return np.array([np.mean([ratio_x[j] / ratio_x[k] >= gamma for k in range(N) if k != j]) for j in range(N)])
    z_logits, z_labels, z_refs = pop
    p_z, ref_z = _prob(z_logits, z_labels), _prob(z_refs, z_labels)
    pr_z = ((1 + a) * ref_z.mean(axis=0) + (1 - a)) / 2 if offline else ref_z.mean(axis=0)
    ratio_z = p_z / pr_z
    return np.array([np.mean(ratio_x[j] / ratio_z >= gamma) for j in range(N)])


@pytest.mark.parametrize("offline", [False, True])
@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_leave_one_out_matches_brute_force(offline, gamma):
    got = rmia_scores(LOGITS, LABELS, REFS, KEEP, offline=offline, gamma=gamma)
    m = N - 1
    np.testing.assert_allclose(np.floor(got * m + 1e-9) / m, _brute(offline, OFFLINE_A, gamma), atol=1e-12)
    assert (got - np.floor(got * m + 1e-9) / m < 1 / m).all()  # the tie-break stays below one step


def test_population_matches_brute_force():
    z = (RNG.normal(size=(7, K)) * 2, RNG.integers(0, K, size=7), RNG.normal(size=(S, 7, K)) * 2)
    for offline in (False, True):
        got = rmia_scores(LOGITS, LABELS, REFS, KEEP, offline=offline, pop_logits=z[0], y_pop=z[1],
                          pop_shadow_logits=z[2])
        np.testing.assert_allclose(np.floor(got * 7 + 1e-9) / 7, _brute(offline, OFFLINE_A, 1.0, z), atol=1e-12)
    ctx = AttackContext(logits=LOGITS, labels=LABELS, shadow_logits=REFS, keep=KEEP,
                        pop_logits=z[0], y_pop=z[1], pop_shadow_logits=z[2])
    want = rmia_scores(LOGITS, LABELS, REFS, KEEP, pop_logits=z[0], y_pop=z[1], pop_shadow_logits=z[2])
    np.testing.assert_allclose(run_attacks(["rmia"], ctx)["rmia"], want)


def test_ranks_like_the_likelihood_ratio():
    got = rmia_scores(LOGITS, LABELS, REFS, KEEP)
    ratio = _prob(LOGITS, LABELS) / _prob(REFS, LABELS).mean(axis=0)
    assert (np.argsort(got) == np.argsort(ratio)).all()


def test_bad_parameters():
    with pytest.raises(AuditError, match="0 <= a <= 1"):
        rmia_scores(LOGITS, LABELS, REFS, KEEP, offline=True, a=1.5)
    with pytest.raises(AuditError, match="no OUT reference"):
        rmia_scores(LOGITS, LABELS, REFS, np.ones_like(KEEP), offline=True)
