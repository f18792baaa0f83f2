"""FL partitions: every row exactly once, seeded, Dirichlet skew grows as α shrinks."""

from __future__ import annotations

import numpy as np
import pytest

from fedmist.errors import ConfigError
from fedmist.data.fl_partition import class_histograms, parse_partition, partition_rows

N, K, C = 3000, 10, 10


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.permutation(5 * N)[:N].astype(np.int64)  # row numbers into a bigger dataset
    labels = np.zeros(5 * N, np.int64)
    labels[rows] = np.arange(N) % K  # balanced classes
    return rows, labels


def _parts(spec: str, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rows, labels = _data()
    return partition_rows(rows, labels[rows], C, spec, seed), labels


def _label_share_spread(hist: np.ndarray) -> float:
    """Mean over clients of the total-variation distance between its label mix and the global one."""
    p = hist / hist.sum(1, keepdims=True)
    q = hist.sum(0) / hist.sum()
    return float(0.5 * np.abs(p - q).sum(1).mean())


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.1", "dirichlet:0.5", "dirichlet:100"])
def test_every_row_is_assigned_exactly_once_and_seeded(spec: str) -> None:
    parts, _ = _parts(spec)
    rows, _ = _data()
    allp = np.concatenate(parts)
    assert len(parts) == C and len(allp) == len(rows)
    assert np.array_equal(np.sort(allp), np.sort(rows))  # disjoint and complete
    assert all(len(p) >= 2 for p in parts)
    again, _ = _parts(spec)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other, _ = _parts(spec, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_dirichlet_histograms_small_alpha_skewed_large_alpha_near_uniform() -> None:
    spread = {}
    for spec in ("iid", "dirichlet:0.1", "dirichlet:0.5", "dirichlet:1000"):
        parts, labels = _parts(spec)
        hist = class_histograms(parts, labels, K)
        assert hist.shape == (C, K) and hist.sum() == N
        spread[spec] = _label_share_spread(hist)
    # α = 0.1: most clients see a few classes; α = 1000: every client's mix is close to the global one
    assert spread["dirichlet:0.1"] > 0.6
    assert spread["dirichlet:0.5"] > 0.35
    assert spread["dirichlet:1000"] < 0.08 and spread["iid"] < 0.08
    assert spread["dirichlet:0.1"] > spread["dirichlet:0.5"] > spread["dirichlet:1000"]
    iid_sizes = [len(p) for p in _parts("iid")[0]]
    assert max(iid_sizes) - min(iid_sizes) <= 1


@pytest.mark.parametrize("spec, message", [("dirichlet:0", "> 0"), ("dirichlet:-1", "> 0"),
                                           ("dirichlet:nan", "> 0"), ("dirichlet:x", "must be a number"),
                                           ("label-skew", "iid' or 'dirichlet")])
def test_bad_partition_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_partition(spec)
