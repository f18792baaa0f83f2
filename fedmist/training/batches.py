"""Minibatches as index arrays over in-memory tensors (no DataLoader: the data fits in memory,
and worker processes cost more than the matmuls for these small models)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Positions 0..n-1 in a random order, in batches of ``batch_size`` (the last may be short).

    Positions, not rows, so per-example side data (xdiff targets) is indexed without a lookup.
    """
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def gather(x: torch.Tensor, rows: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Rows of ``x`` as float32 on ``device`` (features may be stored as uint8 to save memory)."""
    batch = x[torch.from_numpy(rows)]
    return batch.to(device=device, dtype=torch.float32, non_blocking=True)
