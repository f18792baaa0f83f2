"""Minibatches as index arrays over in-memory tensors (no DataLoader: the data fits in memory,
and worker processes cost more than the matmuls for these small models)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def shuffled_batches(indices: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One pass over ``indices`` in a random order, in batches of ``batch_size`` (last may be short)."""
    order = indices[rng.permutation(len(indices))]
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def gather(x: torch.Tensor, rows: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Rows of ``x`` as float32 on ``device`` (features may be stored as uint8 to save memory)."""
    batch = x[torch.from_numpy(rows)]
    return batch.to(device=device, dtype=torch.float32, non_blocking=True)
