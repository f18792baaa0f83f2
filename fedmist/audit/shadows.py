"""Shadow models on disk, in the LiRA reference layout, cached under a key of the recipe content.

Layout of a run's ``shadows/`` directory (``S`` shadows, ``n`` audited examples, ``A``
augmentations, ``K`` classes, ``P`` examples in the shadows' training pool):

- ``meta.json``: the cache key and the sizes; written first, so an interrupted audit resumes.
- ``pool_indices.npy`` (P,) int64 and ``pool_keep.npy`` (S, P) bool: what each shadow trains on.
- ``models/{i:04d}.pt``: state_dict of shadow i, one file each, so finished shadows are kept.
- ``indices.npy`` (n,) int64: dataset row of each audited example.
- ``keep.npy`` (S, n) bool, ``scores.npy`` (S, n, A) float64 φ, ``target_scores.npy``
  (1, n, A) float64, ``logits.npy`` (S, n, K) float32: the LiRA layout plus logits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fedmist.config import RunConfig, non_training_keys
from fedmist.errors import AuditError

FORMAT = "fedmist-shadows-1"
REBUILD_HINT = "rerun with --rebuild-shadows to discard it and train new shadows"

# What keys a cache comes from the config's own field declarations (``fedmist.config``): fields
# declared ``trains=False`` (where or how fast a run trains, not what it learns) never count, so a
# run moved to another data directory or to a GPU keeps its shadows. The fields below are the ones
# every cache on disk was keyed with, at any value. Every other field (added after caches existed,
# or added tomorrow) counts only when it differs from its default, so adding a config field neither
# invalidates old caches nor needs an edit here. This list is history: never extend it.
KEYED_AT_DEFAULT = frozenset({"active_attack", "active_lr", "active_steps", "active_targets", "batch_size",
    "clients", "data_seed", "dataset", "defense", "epochs", "fl_dp_clip", "fl_dp_delta", "fl_dp_noise",
    "lam", "local_epochs", "lr", "lr_schedule", "max_record_gb", "mixup_alpha", "mode", "model", "momentum",
    "partition", "record_updates", "repartition", "rounds", "seed", "skip_last_xdiff", "train_size",
    "weight_decay", "xdiff_loss"})

# The federated-learning fields (``--mode fl``) arrived after caches of virtual-mode runs existed,
# and caches made since include them at these defaults: a cache made with either key is accepted.
FL_FIELDS = {"partition": "iid", "rounds": 0, "local_epochs": 1, "record_updates": False,
             "max_record_gb": 4.0, "fl_dp_noise": 0.0, "fl_dp_clip": 1.0, "fl_dp_delta": 1e-05,
             "active_attack": "", "active_targets": 100, "active_lr": 0.1, "active_steps": 1}
Key = str | tuple[str, ...]  # a cache key, or the keys a cache may have been made with (first: new caches)

TrainFn = Callable[[int, np.ndarray], Mapping[str, torch.Tensor]]


def check_shadow_count(n_shadows: int) -> None:
    if n_shadows < 2 or n_shadows % 2:
        raise AuditError(f"the number of shadows must be even and >= 2 (each example IN for half), got {n_shadows}")


def balanced_keep(n_shadows: int, n_examples: int, seed: int) -> np.ndarray:
    """(S, n) bool: every example is IN for exactly S/2 shadows, each shadow trains on ~n/2.

    LiRA's sort trick: rank S uniform draws per example and keep the lowest half.

    >>> balanced_keep(4, 6, seed=0).sum(axis=0).tolist()
    [2, 2, 2, 2, 2, 2]
    """
    check_shadow_count(n_shadows)
    if n_examples < 1:
        raise AuditError("the shadow pool is empty")
    draws = np.random.default_rng(seed).random((n_shadows, n_examples))
    return draws.argsort(axis=0) < n_shadows // 2


def cache_key(recipe: Mapping[str, Any], seed: int, n_shadows: int, indices: np.ndarray,
              pool: np.ndarray | None = None, config_cls: type = RunConfig) -> str:
    """sha256 over the recipe *content* (training fields; see ``KEYED_AT_DEFAULT``), the seed, the number of
    shadows, the audited dataset rows and the pool rows: a renamed recipe keeps its shadows, an
    edited one does not."""
    defaults = config_cls().to_dict()
    skip = non_training_keys(config_cls) | {"name"}
    content = {k: v for k, v in recipe.items()
               if k not in skip and (k in KEYED_AT_DEFAULT or k not in defaults or v != defaults[k])}
    blob = json.dumps({"recipe": content, "seed": int(seed), "n_shadows": int(n_shadows),
                       "indices": np.asarray(indices, dtype=np.int64).tolist(),
                       "pool": None if pool is None else np.asarray(pool, dtype=np.int64).tolist()},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_keys(recipe: Mapping[str, Any], seed: int, n_shadows: int, indices: np.ndarray,
               pool: np.ndarray | None = None) -> tuple[str, ...]:
    """The key of a new cache, then the key the same recipe had before the FL fields existed."""
    key = cache_key(recipe, seed, n_shadows, indices, pool)
    before_fl = {k: v for k, v in recipe.items() if not (k in FL_FIELDS and v == FL_FIELDS[k])}
    old = cache_key(before_fl, seed, n_shadows, indices, pool)
    return (key,) if old == key else (key, old)


def _accepted(key: Key) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)


def _check_meta(cache_dir: Path, key: Key) -> dict | None:
    """The meta of an existing cache made with ``key``; None when there is none; error otherwise."""
    path = cache_dir / "meta.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise AuditError(f"shadow cache {cache_dir} has a corrupt meta.json; {REBUILD_HINT}") from None
    if meta.get("key") not in _accepted(key):
        raise AuditError(f"shadow cache {cache_dir} was made by another recipe, seed or audit set; {REBUILD_HINT}")
    return meta


def _save_atomic(path: Path, save: Callable[[Path], None]) -> None:
    """Write through a temporary file so a half-written file never counts as done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save(tmp)
    os.replace(tmp, path)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)
    _save_atomic(path, write)


def _write_meta(cache_dir: Path, key: Key, n_shadows: int) -> None:
    meta = {"format": FORMAT, "key": _accepted(key)[0], "n_shadows": int(n_shadows)}
    _save_atomic(Path(cache_dir) / "meta.json", lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))


def model_path(cache_dir: Path, i: int) -> Path:
    return Path(cache_dir) / "models" / f"{i:04d}.pt"


def clear_cache(cache_dir: Path) -> None:
    """Delete a shadow cache (``--rebuild-shadows``)."""
    if Path(cache_dir).exists():
        shutil.rmtree(cache_dir)


def train_shadows(keep: np.ndarray, indices: np.ndarray, train_fn: TrainFn, cache_dir: Path, key: Key,
                  progress: bool = True) -> list[int]:
    """Train the shadows whose model file is missing; return the indices trained now.

    ``keep`` (S, P) bool says which of the pool rows ``indices`` (P,) shadow i trains on; it is
    called as ``train_fn(i, indices[keep[i]])`` and returns a state_dict. A cache made with another
    key raises AuditError; so does one whose pool differs despite the same key.
    """
    cache_dir = Path(cache_dir)
    keep = np.asarray(keep)
    indices = np.asarray(indices, dtype=np.int64)
    if keep.dtype != bool or keep.ndim != 2 or keep.shape[1] != len(indices):
        raise AuditError(f"keep must be a bool (S, {len(indices)}) array, got {keep.dtype} {keep.shape}")
    if _check_meta(cache_dir, key) is None:
        _write_meta(cache_dir, key, keep.shape[0])
    for name, arr in (("pool_indices", indices), ("pool_keep", keep)):
        path = cache_dir / f"{name}.npy"
        if not path.is_file():
            _save_npy(path, arr)
        elif not np.array_equal(np.load(path), arr):
            raise AuditError(f"shadow cache {cache_dir} was trained on another pool; {REBUILD_HINT}")
    todo = [i for i in range(keep.shape[0]) if not model_path(cache_dir, i).is_file()]
    columns = (TextColumn("shadow models"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, disable=not progress or not todo, transient=False) as bar:
        task = bar.add_task("train", total=len(todo))

        def done(i: int, state: Mapping[str, torch.Tensor]) -> None:
            _save_atomic(model_path(cache_dir, i), lambda p, s=state: torch.save(dict(s), p))
            bar.advance(task)

        train_all = getattr(train_fn, "train_all", None)
        if train_all is not None and todo:
            # One engine session for all missing shadows (e.g. one Flower simulation: its start-up
            # is paid once); each shadow is saved the moment it finishes, so an interruption
            # loses at most the shadow in training.
            train_all([(i, indices[keep[i]]) for i in todo], done)
        else:
            for i in todo:
                done(i, train_fn(i, indices[keep[i]]))
    return todo


def load_shadow_state(cache_dir: Path, i: int) -> dict[str, torch.Tensor]:
    """State dict of shadow ``i`` (on the CPU)."""
    path = model_path(cache_dir, i)
    if not path.is_file():
        raise AuditError(f"shadow model {path} is missing; {REBUILD_HINT}")
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class ShadowLayout:
    """The LiRA reference arrays of one audit (shapes in the module docstring)."""

    indices: np.ndarray
    keep: np.ndarray
    scores: np.ndarray
    target_scores: np.ndarray
    logits: np.ndarray

    def __post_init__(self) -> None:
        s, n = self.keep.shape
        if (self.indices.shape != (n,) or self.scores.shape[:2] != (s, n) or self.scores.ndim != 3
                or self.target_scores.shape != (1, n, self.scores.shape[2])
                or self.logits.ndim != 3 or self.logits.shape[:2] != (s, n)):
            raise AuditError("shadow arrays do not fit together: indices (n,), keep (S, n), scores (S, n, A), "
                             "target_scores (1, n, A), logits (S, n, K)")


_ARRAYS = {"indices": np.int64, "keep": bool, "scores": np.float64, "target_scores": np.float64, "logits": np.float32}


def save_layout(cache_dir: Path, layout: ShadowLayout, key: Key) -> None:
    """Write the LiRA arrays next to the models of the cache made with ``key``."""
    cache_dir = Path(cache_dir)
    if _check_meta(cache_dir, key) is None:
        _write_meta(cache_dir, key, layout.keep.shape[0])
    for name, dtype in _ARRAYS.items():
        _save_npy(cache_dir / f"{name}.npy", np.asarray(getattr(layout, name), dtype=dtype))


def load_layout(cache_dir: Path, key: Key) -> ShadowLayout | None:
    """The cached LiRA arrays, or None when they have not been written yet.

    Raises AuditError when the cache was made with another key.
    """
    cache_dir = Path(cache_dir)
    if _check_meta(cache_dir, key) is None:
        return None
    paths = {name: cache_dir / f"{name}.npy" for name in _ARRAYS}
    if not all(p.is_file() for p in paths.values()):
        return None
    return ShadowLayout(**{name: np.load(p) for name, p in paths.items()})
