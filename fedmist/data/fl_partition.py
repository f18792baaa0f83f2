"""Each FL client's fixed own data: IID or Dirichlet(α) label skew (Hsu et al. 2019).

A partition is a list of sorted row arrays, one per client, disjoint, covering every training
row exactly once. Seeded with numpy: the same (rows, labels, spec, seed) gives the same split.
"""

from __future__ import annotations

import math

import numpy as np

from fedmist.errors import ConfigError

MIN_ROWS = 2  # a Dirichlet draw leaving any client with fewer rows is redrawn
MAX_DRAWS = 200


def parse_partition(spec: str) -> tuple[str, float]:
    """``"iid"`` -> ("iid", 0); ``"dirichlet:0.5"`` -> ("dirichlet", 0.5); anything else a ConfigError.

    >>> parse_partition("dirichlet:0.5")
    ('dirichlet', 0.5)
    """
    text = spec.strip().lower()
    if text == "iid":
        return "iid", 0.0
    kind, _, value = text.partition(":")
    if kind != "dirichlet" or not value:
        raise ConfigError(f"partition must be 'iid' or 'dirichlet:ALPHA' (e.g. dirichlet:0.5), got {spec!r}")
    try:
        alpha = float(value)
    except ValueError:
        raise ConfigError(f"partition {spec!r}: Dirichlet α must be a number, got {value!r}") from None
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ConfigError(f"partition {spec!r}: Dirichlet α must be a finite number > 0, got {value}")
    return "dirichlet", alpha


def partition_rows(rows: np.ndarray, labels: np.ndarray, clients: int, spec: str, seed: int) -> list[np.ndarray]:
    """Split ``rows`` (dataset row numbers) over ``clients``; ``labels`` (len(rows),) their classes.

    IID: a seeded permutation cut into near-equal parts. ``dirichlet:α``: for every class, the
    class's rows are shared out in proportions drawn from Dir(α·1_C) (small α: each client sees
    few classes; large α: close to IID); redrawn while some client would get < ``MIN_ROWS`` rows.
    """
    kind, alpha = parse_partition(spec)
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels)
    if len(labels) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
    if clients < 1 or clients * MIN_ROWS > len(rows):
        raise ConfigError(f"cannot give {clients} clients at least {MIN_ROWS} of {len(rows)} training rows each")
    rng = np.random.default_rng([seed, 0xF1, 0xD7])
    if kind == "iid":
        return [np.sort(p) for p in np.array_split(rows[rng.permutation(len(rows))], clients)]
    classes = np.unique(labels)
    for _ in range(MAX_DRAWS):
        owner = np.empty(len(rows), dtype=np.int64)
        for c in classes:
            pos = np.flatnonzero(labels == c)
            pos = pos[rng.permutation(len(pos))]
            share = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(share)[:-1] * len(pos)).round().astype(np.int64)
            for k, chunk in enumerate(np.split(pos, cuts)):
                owner[chunk] = k
        sizes = np.bincount(owner, minlength=clients)
        if sizes.min() >= MIN_ROWS:
            return [np.sort(rows[owner == k]) for k in range(clients)]
    raise ConfigError(f"partition {spec!r}: no Dirichlet draw in {MAX_DRAWS} gave each of {clients} clients "
                      f">= {MIN_ROWS} rows; use a larger α or fewer clients")


def class_histograms(parts: list[np.ndarray], all_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(clients, classes) counts: how many rows of each class every client holds."""
    return np.stack([np.bincount(np.asarray(all_labels)[p], minlength=num_classes) for p in parts])


def owner_of(parts: list[np.ndarray]) -> dict[int, int]:
    """Row number -> client that holds it."""
    return {int(r): k for k, p in enumerate(parts) for r in p}
