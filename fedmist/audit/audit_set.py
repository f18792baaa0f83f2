"""The balanced audit set and the pool the shadow models train on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedmist.errors import AuditError


@dataclass(frozen=True)
class AuditSet:
    """``rows`` (n,) dataset rows of the audited examples in a random order (so that position
    says nothing about membership), ``is_member`` (n,) bool, ``pool`` (P,) sorted rows the shadows
    train on (all members and non-members of the split), ``pool_pos`` (n,) position of each
    audited row in ``pool``."""

    rows: np.ndarray
    is_member: np.ndarray
    pool: np.ndarray
    pool_pos: np.ndarray


def split_arrays(split: Any) -> dict[str, np.ndarray]:
    """``members`` and ``nonmembers`` of a run's split, given as a mapping or as attributes."""
    get = split.__getitem__ if isinstance(split, Mapping) else lambda k: getattr(split, k)
    try:
        return {k: np.asarray(get(k), dtype=np.int64) for k in ("members", "nonmembers")}
    except (KeyError, AttributeError):
        raise AuditError("the run's split has no members/nonmembers arrays") from None


def build_audit_set(members: np.ndarray, nonmembers: np.ndarray, seed: int) -> AuditSet:
    """Balanced audit set: all of the smaller side and as many, seeded-randomly drawn, of the
    larger (normally all non-members and an equal number of members).

    >>> a = build_audit_set(np.arange(10), np.arange(10, 14), seed=0)
    >>> len(a.rows), int(a.is_member.sum()), len(a.pool)
    (8, 4, 14)
    """
    members, nonmembers = np.asarray(members, np.int64), np.asarray(nonmembers, np.int64)
    if len(members) == 0 or len(nonmembers) == 0:
        raise AuditError("an audit needs both members and non-members in the run's split")
    if np.intersect1d(members, nonmembers).size:
        raise AuditError("the run's split lists some rows as both members and non-members")
    rng = np.random.default_rng([seed, 0xA0D1])
    n = min(len(members), len(nonmembers))
    mem = rng.choice(members, size=n, replace=False)
    non = rng.choice(nonmembers, size=n, replace=False)
    order = rng.permutation(2 * n)
    rows = np.concatenate([mem, non])[order]
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)][order]
    pool = np.union1d(members, nonmembers)
    return AuditSet(rows, is_member, pool, np.searchsorted(pool, rows))
