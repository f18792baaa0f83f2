"""Target / non-member / test splits and the per-epoch partition of the training set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmist.errors import ConfigError, RunDirError


@dataclass(frozen=True)
class Split:
    """Row numbers (into the dataset in file order) of each role.

    ``members`` train the target; ``nonmembers`` are an equal-sized (when the data allows) disjoint
    set for audits; ``test`` measures accuracy. When the dataset is too small for a separate test
    set (Location: 5,010 rows, 4,000 members), the test set *is* the non-member set and
    ``test_is_nonmembers`` says so.
    """

    members: np.ndarray
    nonmembers: np.ndarray
    test: np.ndarray
    test_is_nonmembers: bool
    # Held out of the training budget for defenses that need data they do not train on as members
    # (MMD's validation set, AdvReg's and MemGuard's non-member reference); never audited.
    reference: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def save(self, path: Path) -> None:
        np.savez(path, members=self.members, nonmembers=self.nonmembers, test=self.test,
                 test_is_nonmembers=np.array(self.test_is_nonmembers), reference=self.reference)

    @classmethod
    def load(cls, path: Path) -> "Split":
        if not path.is_file():
            raise RunDirError(f"split file missing: {path}")
        with np.load(path) as z:
            reference = z["reference"] if "reference" in z.files else np.empty(0, np.int64)
            return cls(z["members"], z["nonmembers"], z["test"], bool(z["test_is_nonmembers"]), reference)


def make_split(n_rows: int, train_size: int, seed: int, max_test: int = 20000, reference: int = 0) -> Split:
    """Seeded split: members = ``train_size`` rows, then as many non-members (at most as many as
    members), then a disjoint test set from what is left (capped at ``max_test`` to keep per-epoch
    evaluation cheap), or the non-member set itself when nothing is left.

    >>> s = make_split(10, 4, seed=0)
    >>> len(s.members), len(s.nonmembers), len(s.test), s.test_is_nonmembers
    (4, 4, 2, False)

    ``reference`` rows come out of the training budget (the last ``reference`` of the
    ``train_size`` drawn), so non-member and test rows are the same with and without one and
    defenses that need a reference set are compared on the same audit and test rows.

    >>> r = make_split(10, 4, seed=0, reference=1)
    >>> len(r.members), len(r.reference), bool((r.nonmembers == s.nonmembers).all())
    (3, 1, True)
    """
    if train_size < 1 or train_size >= n_rows:
        raise ConfigError(f"train_size must be between 1 and {n_rows - 1} for this dataset, got {train_size}")
    if not 0 <= reference < train_size:
        raise ConfigError(f"reference_size must be between 0 and train_size - 1 ({train_size - 1}), got {reference}")
    perm = np.random.default_rng(seed).permutation(n_rows).astype(np.int64)
    members, ref = perm[:train_size - reference], perm[train_size - reference:train_size]
    n_non = min(train_size, n_rows - train_size)
    nonmembers = perm[train_size:train_size + n_non]
    rest = perm[train_size + n_non:train_size + n_non + max_test]
    if len(rest) == 0:
        return Split(members, nonmembers, nonmembers.copy(), True, ref)
    return Split(members, nonmembers, rest, False, ref)


def partition(members: np.ndarray, clients: int, seed: int, epoch: int, repartition: str = "epoch") -> list[np.ndarray]:
    """Split the members into ``clients`` disjoint, near-equal parts (sizes differ by at most 1).

    ``repartition="epoch"`` draws a fresh seeded permutation every epoch (the paper's Algorithm 1);
    ``"fixed"`` keeps epoch 1's partition for the whole run (the authors' code on Location).
    """
    if clients < 1:
        raise ConfigError(f"clients must be >= 1, got {clients}")
    if clients > len(members):
        raise ConfigError(f"{clients} clients but only {len(members)} training examples")
    draw = epoch if repartition == "epoch" else 1
    rng = np.random.default_rng([seed, 0x9A27, draw])
    shuffled = members[rng.permutation(len(members))]
    return [np.sort(part) for part in np.array_split(shuffled, clients)]
