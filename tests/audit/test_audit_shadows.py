"""Shadow bookkeeping: balanced IN/OUT, content-keyed cache, resumable training with a real trainer."""

import json

import numpy as np
import pytest
import torch

from fedmist.errors import AuditError
from fedmist.audit.shadows import (FL_FIELDS, ShadowLayout, balanced_keep, cache_key, cache_keys, load_layout,
                                   load_shadow_state, model_path, save_layout, train_shadows)
from fedmist.data.synthetic import make_synthetic


def test_balanced_keep():
    keep = balanced_keep(8, 101, seed=3)
    assert keep.shape == (8, 101) and keep.dtype == bool
    assert (keep.sum(axis=0) == 4).all()
    assert (np.abs(keep.sum(axis=1) - 101 / 2) < 20).all()  # each shadow trains on about half the pool
    assert np.array_equal(keep, balanced_keep(8, 101, seed=3))
    assert not np.array_equal(keep, balanced_keep(8, 101, seed=4))
    for bad in (0, 1, 3, 7):
        with pytest.raises(AuditError, match="even and >= 2"):
            balanced_keep(bad, 10, seed=0)


def test_cache_key_is_about_content():
    recipe = {"dataset": "location", "lam": 14.0, "epochs": 100, "name": "a", "device": "cpu"}
    idx = np.arange(10)
    key = cache_key(recipe, 0, 8, idx)
    assert key == cache_key(dict(recipe, name="renamed", device="cuda"), 0, 8, idx)
    assert key == cache_key(dict(reversed(list(recipe.items()))), 0, 8, idx)  # key order is irrelevant
    assert key != cache_key(dict(recipe, lam=25.0), 0, 8, idx)
    assert key != cache_key(recipe, 1, 8, idx)
    assert key != cache_key(recipe, 0, 16, idx)
    assert key != cache_key(recipe, 0, 8, idx[::-1])
    assert key != cache_key(recipe, 0, 8, idx, pool=np.arange(20))
    assert len(key) == 64


def test_a_cache_made_before_the_fl_fields_existed_is_still_accepted(tmp_path):
    """A virtual-mode run's cache keyed without the FL fields keeps working; a new cache gets the
    current key; a real change (λ) or a non-default FL field still invalidates."""
    old_recipe = {"dataset": "location", "defense": "sgd", "lam": 14.0, "mode": "virtual"}
    now = dict(old_recipe, **FL_FIELDS)  # what the same run's config holds today
    idx = np.arange(10)
    old_key = cache_key(old_recipe, 0, 2, idx)
    keys = cache_keys(now, 0, 2, idx)
    assert keys == (cache_key(now, 0, 2, idx), old_key)
    keep = balanced_keep(2, 10, seed=0)
    layout = ShadowLayout(indices=idx, keep=keep, scores=np.zeros((2, 10, 1)), target_scores=np.zeros((1, 10, 1)),
                          logits=np.zeros((2, 10, 3), np.float32))
    save_layout(tmp_path / "old", layout, old_key)  # written by fedmist before FL mode
    assert load_layout(tmp_path / "old", keys) is not None
    save_layout(tmp_path / "new", layout, keys)
    assert json.loads((tmp_path / "new" / "meta.json").read_text())["key"] == keys[0]
    for changed in (dict(now, lam=2.0), dict(now, rounds=5)):
        with pytest.raises(AuditError, match="another recipe"):
            load_layout(tmp_path / "old", cache_keys(changed, 0, 2, idx))


CFG = dict(n_rows=120, n_features=20, num_classes=4, epochs=30)


@pytest.fixture
def trainer(kit):
    """A real shadow trainer (tiny MLP, SGD) that records its calls."""
    cfg = kit.TinyConfig(**CFG)
    ds = make_synthetic(cfg.n_rows, cfg.n_features, cfg.num_classes, seed=0)
    calls = []

    def train_fn(i: int, member_rows: np.ndarray) -> dict[str, torch.Tensor]:
        calls.append((i, member_rows.copy()))
        return kit.train_mlp(cfg, ds, member_rows, seed=i).state_dict()
    return train_fn, calls


def test_train_shadows_caches_and_resumes(tmp_path, trainer, kit):
    train_fn, calls = trainer
    pool = np.arange(0, 120, 2)  # dataset rows of the pool
    keep = balanced_keep(4, len(pool), seed=0)
    key = cache_key({"r": 1}, 0, 4, pool)
    assert train_shadows(keep, pool, train_fn, tmp_path, key, progress=False) == [0, 1, 2, 3]
    assert [i for i, _ in calls] == [0, 1, 2, 3]
    for i, rows in calls:
        assert np.array_equal(rows, pool[keep[i]])
    # a second call trains nothing
    assert train_shadows(keep, pool, train_fn, tmp_path, key, progress=False) == []
    assert len(calls) == 4
    # an interrupted audit (one model file missing) resumes with just that shadow
    model_path(tmp_path, 2).unlink()
    assert train_shadows(keep, pool, train_fn, tmp_path, key, progress=True) == [2]
    assert len(calls) == 5
    state = load_shadow_state(tmp_path, 2)
    again = kit.train_mlp(kit.TinyConfig(**CFG), make_synthetic(120, 20, 4, seed=0), pool[keep[2]], seed=2)
    assert all(torch.equal(state[k], v) for k, v in again.state_dict().items())
    assert json.loads((tmp_path / "meta.json").read_text())["key"] == key
    assert not list(tmp_path.rglob("*.tmp"))


def test_another_key_or_pool_is_refused(tmp_path, trainer):
    train_fn, calls = trainer
    pool = np.arange(40)
    keep = balanced_keep(2, 40, seed=0)
    train_shadows(keep, pool, train_fn, tmp_path, "key-a", progress=False)
    with pytest.raises(AuditError, match="made by another recipe.*--rebuild-shadows"):
        train_shadows(keep, pool, train_fn, tmp_path, "key-b", progress=False)
    with pytest.raises(AuditError, match="another pool"):
        train_shadows(balanced_keep(2, 40, seed=1), pool, train_fn, tmp_path, "key-a", progress=False)
    assert len(calls) == 2


def test_layout_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    layout = ShadowLayout(indices=np.arange(5, dtype=np.int64), keep=balanced_keep(4, 5, seed=0),
                          scores=rng.normal(size=(4, 5, 2)), target_scores=rng.normal(size=(1, 5, 2)),
                          logits=rng.normal(size=(4, 5, 3)).astype(np.float32))
    assert load_layout(tmp_path, "k") is None
    save_layout(tmp_path, layout, "k")
    back = load_layout(tmp_path, "k")
    for name in ("indices", "keep", "scores", "target_scores", "logits"):
        assert np.array_equal(getattr(back, name), getattr(layout, name))
        assert getattr(back, name).dtype == getattr(layout, name).dtype
    # plain numpy can read the LiRA files
    assert np.load(tmp_path / "keep.npy").shape == (4, 5)
    with pytest.raises(AuditError, match="another recipe"):
        load_layout(tmp_path, "other")
    with pytest.raises(AuditError, match="do not fit"):
        ShadowLayout(indices=np.arange(4), keep=layout.keep, scores=layout.scores,
                     target_scores=layout.target_scores, logits=layout.logits)
