"""Shadow-trained attack classifiers: out of sample per example, and able to learn a real signal."""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fedmist.attacks import AttackContext, run_attacks
from fedmist.attacks.class_nn import class_nn_features, class_nn_scores
from fedmist.attacks.crossfit import crossfit_scores, example_folds


class RecordingLogReg(LogisticRegression):
    """A real logistic regression that remembers which example ids (column 0) it saw."""

    log: list[tuple[set, set]] = []

    def fit(self, x, y):
        self.seen = set(x[:, 0].astype(int))
        return super().fit(x[:, 1:], y)

    def predict_proba(self, x):
        RecordingLogReg.log.append((self.seen, set(x[:, 0].astype(int))))
        return super().predict_proba(x[:, 1:])


def _membership_data(n=120, s=8, seed=0):
    rng = np.random.default_rng(seed)
    keep = np.argsort(rng.random((s, n)), axis=0) < s // 2
    shadow = np.where(keep[..., None], 1.0, -1.0) + rng.normal(size=(s, n, 2))
    member = rng.random(n) < 0.5
    target = np.where(member[:, None], 1.0, -1.0) + rng.normal(size=(n, 2))
    return keep, shadow, target, member


def test_folds_partition_examples():
    fold = example_folds(11, 3, np.random.default_rng(0))
    assert sorted(np.bincount(fold).tolist()) == [3, 4, 4]


def test_an_example_is_never_scored_by_a_classifier_that_saw_it():
    keep, shadow, target, _ = _membership_data()
    ids = np.arange(shadow.shape[1], dtype=float)
    shadow_ids = np.concatenate([np.broadcast_to(ids[None, :, None], keep.shape + (1,)), shadow], axis=2)
    target_ids = np.concatenate([ids[:, None], target], axis=1)
    RecordingLogReg.log = []
    groups = np.arange(len(ids)) % 3
    crossfit_scores(shadow_ids, keep, target_ids, RecordingLogReg, np.random.default_rng(0), folds=4, groups=groups)
    assert len(RecordingLogReg.log) == 4 * 3  # one classifier per fold and group
    scored = set()
    for seen, scoring in RecordingLogReg.log:
        assert not seen & scoring
        scored |= scoring
    assert scored == set(range(len(ids)))


def test_classifier_learns_a_population_signal():
    keep, shadow, target, member = _membership_data(n=200)
    scores = crossfit_scores(shadow, keep, target, LogisticRegression, np.random.default_rng(0))
    assert roc_auc_score(member, scores) > 0.8


def test_class_nn_features_and_scores():
    logits = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    feats = class_nn_features(logits, np.array([0, 0]), top=2)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(feats, [[logp[0, 0], logp[0, 0], logp[0, 1]], [logp[1, 0], logp[1, 1], logp[1, 2]]])
    # members of the target are confidently right, non-members not: class_nn should find it
    rng = np.random.default_rng(1)
    n, s, k = 150, 8, 3
    labels = rng.integers(0, k, size=n)
    keep = np.argsort(rng.random((s, n)), axis=0) < s // 2

    def outputs(is_in):
        z = rng.normal(size=is_in.shape + (k,))
        hot = np.arange(k) == labels[..., None] if is_in.ndim == 1 else np.arange(k) == labels[None, :, None]
        return z + 4.0 * hot * is_in[..., None]
    member = rng.random(n) < 0.5
    shadow_logits, logits = outputs(keep), outputs(member)
    got = class_nn_scores(logits, labels, shadow_logits, keep, np.random.default_rng(0), folds=3)
    assert roc_auc_score(member, got) > 0.8
    ctx = AttackContext(logits=logits, labels=labels, shadow_logits=shadow_logits, keep=keep)
    assert roc_auc_score(member, run_attacks(["class_nn"], ctx)["class_nn"]) > 0.8
