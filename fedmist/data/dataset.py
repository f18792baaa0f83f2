"""The in-memory dataset every part of fedmist works on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Features and 0-based labels of one dataset, rows in the order of its source file.

    Row numbers are what run directories store (``split.npz``), so an outside tool can
    recompute any number from the raw file.
    """

    name: str
    x: np.ndarray  # (n, *feature_shape), float32 or uint8
    y: np.ndarray  # (n,), int64, values 0..num_classes-1
    num_classes: int
    synthetic: bool = False
    source: str = ""  # file path or generator description, shown in reports

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{self.name}: {len(self.x)} feature rows but {len(self.y)} labels")

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.y)
