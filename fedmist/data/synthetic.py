"""Seeded synthetic tabular data: tests, demos and speed work at real shapes without files."""

from __future__ import annotations

import numpy as np

from fedmist.data.dataset import Dataset


def make_synthetic(
    n_rows: int,
    n_features: int,
    num_classes: int,
    seed: int = 0,
    labels: np.ndarray | None = None,
    density: float = 0.12,
    name: str = "synthetic",
) -> Dataset:
    """Binary features drawn from per-class Bernoulli prototypes.

    Each class has a prototype of feature probabilities; a row of class k flips a coin per
    feature with the prototype's probability. Classes overlap (learnable, not trivially), like the
    binary Location/Texas/Purchase records. ``labels`` fixes the label vector (e.g. Texas's real
    labels, so the class balance matches); otherwise labels are uniform.

    >>> d = make_synthetic(50, 8, 3, seed=1)
    >>> d.x.shape, d.y.shape, d.num_classes, d.synthetic
    ((50, 8), (50,), 3, True)
    """
    if n_rows < 1 or n_features < 1 or num_classes < 2:
        raise ValueError("synthetic data needs n_rows >= 1, n_features >= 1, num_classes >= 2")
    rng = np.random.default_rng(seed)
    if labels is None:
        y = rng.integers(0, num_classes, size=n_rows, dtype=np.int64)
    else:
        y = np.asarray(labels, dtype=np.int64)
        if len(y) != n_rows:
            raise ValueError(f"labels has {len(y)} rows, expected {n_rows}")
    # Prototypes: mostly sparse background plus a class-specific set of likely features.
    proto = rng.uniform(0.0, 2 * density, size=(num_classes, n_features)).astype(np.float32)
    hot = rng.random((num_classes, n_features)) < 0.08
    proto[hot] = rng.uniform(0.5, 0.9, size=int(hot.sum()))
    x = np.empty((n_rows, n_features), dtype=np.uint8)
    for start in range(0, n_rows, 8192):  # chunked: Texas-sized data stays within memory
        stop = min(start + 8192, n_rows)
        x[start:stop] = rng.random((stop - start, n_features), dtype=np.float32) < proto[y[start:stop]]
    return Dataset(name=name, x=x, y=y, num_classes=num_classes, synthetic=True,
                   source=f"make_synthetic(n_rows={n_rows}, n_features={n_features}, "
                          f"num_classes={num_classes}, seed={seed})")
