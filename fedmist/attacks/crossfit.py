"""Out-of-sample membership classifiers trained on shadow-model views (Class-NN, white-box).

Shadow views of an example j tell a classifier how *that example* looks IN and OUT. Scoring the
target's view of j with a classifier that saw j's shadow views would turn a population-level
attack into a per-example one (a LiRA in disguise) and report it under the wrong name. So the
examples are split into folds; the classifier that scores fold f is trained only on the shadow
views of examples in the other folds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedmist.errors import AuditError

MIN_LABEL_ROWS = 5  # fewer IN or OUT rows than this: no classifier of its own (early stopping splits them)


def example_folds(n: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) fold id in 0..folds-1, sizes differing by at most one, randomly assigned."""
    if folds < 2 or folds > n:
        raise AuditError(f"cross-fitting needs 2 <= folds <= examples, got {folds} folds for {n} examples")
    fold = np.empty(n, dtype=np.int64)
    fold[rng.permutation(n)] = np.arange(n) % folds
    return fold


def mlp_classifier(hidden: tuple[int, ...] = (64,), max_iter: int = 200, seed: int = 0):
    """Standardised inputs into a small sklearn MLP (Shokri-style attack model).

    Early stopping on a 20 % validation split keeps the attack model from overfitting the shadow
    views, and makes it 5-10x faster than running all ``max_iter`` epochs.
    """
    return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=hidden, max_iter=max_iter,
                                                         early_stopping=True, validation_fraction=0.2,
                                                         random_state=seed))


def crossfit_scores(shadow_feats: np.ndarray, keep: np.ndarray, target_feats: np.ndarray,
                    make_model: Callable[[], object], rng: np.random.Generator, folds: int = 5,
                    groups: np.ndarray | None = None, max_rows: int | None = 50_000) -> np.ndarray:
    """P(IN) of every target view from a classifier that never saw that example's shadow views.

    ``shadow_feats`` (S, n, F) with labels ``keep`` (S, n); ``target_feats`` (n, F). With
    ``groups`` (n,) (e.g. the class), one classifier per group and fold, as Shokri et al.'s
    per-class attack models; a group with fewer than ``MIN_LABEL_ROWS`` IN or OUT training rows
    falls back to the fold's classifier over all groups. ``max_rows`` caps the
    training rows of each classifier (random subsample). Returns (n,) float64, higher = member.
    """
    s, n, f = shadow_feats.shape
    if keep.shape != (s, n) or target_feats.shape != (n, f):
        raise AuditError(f"shadow features {shadow_feats.shape}, keep {keep.shape} and target features "
                         f"{target_feats.shape} do not fit together")
    fold = example_folds(n, folds, rng)
    grp = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    out = np.empty(n, dtype=np.float64)

    def fit(examples: np.ndarray):
        x = shadow_feats[:, examples].reshape(-1, f)
        y = keep[:, examples].reshape(-1)
        if max_rows is not None and len(y) > max_rows:
            pick = rng.choice(len(y), size=max_rows, replace=False)
            x, y = x[pick], y[pick]
        if min(int(y.sum()), int((~y).sum())) < MIN_LABEL_ROWS:
            return None
        model = make_model()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x, y)
        return model

    for k in range(folds):
        train, test = fold != k, fold == k
        pooled = None
        for g in np.unique(grp[test]):
            model = fit(np.flatnonzero(train & (grp == g))) if groups is not None else None
            if model is None:
                pooled = pooled if pooled is not None else fit(np.flatnonzero(train))
                model = pooled
            if model is None:
                raise AuditError("cannot train a membership classifier: the shadows give only one label")
            rows = np.flatnonzero(test & (grp == g))
            out[rows] = model.predict_proba(target_feats[rows])[:, 1]
    return out
