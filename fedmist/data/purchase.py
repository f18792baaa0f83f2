"""Purchase100: 197,324 shopping records, 600 binary features, 100 classes.

Accepted forms, tried in this order under ``<data_dir>/purchase/``:

1. ``purchase100.npz`` with keys ``features`` and ``labels`` (one-hot, or integer);
2. ``dataset_purchase.tgz`` with the member ``dataset_purchase``: a CSV whose first column is
   the label 1..100, then 600 features of 0/1;
3. that CSV extracted, ``dataset_purchase``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedmist.data.dataset import Dataset
from fedmist.data.formats import (
    TabularSpec,
    check_archive,
    check_features,
    one_based_labels,
    parse_binary_csv,
    read_members,
    read_npz,
)
from fedmist.data.paths import display_path
from fedmist.data.synthetic import make_synthetic
from fedmist.errors import DataError

PURCHASE = TabularSpec(
    name="purchase",
    title="Purchase100",
    rows=197_324,
    n_features=600,
    num_classes=100,
    archive_hash="git-blob",
    archive_ids=frozenset({"3efa7476ad5ed7ac3e558d28585a186b38fc5f19"}),
    # Newest first; the two older versions of the same repository file are the same dataset.
    npz_blob_ids=frozenset({
        "aa8b5b1d2f4066c2144959bdf2e284031b199e39",
        "7b293f5e4dd3a8b294e1645b0a8862bc8f3a0ef7",
        "fc23f7234edeaca4f74105ba286a8127cb74229d",
    }),
)

NPZ = Path("purchase/purchase100.npz")
TGZ = Path("purchase/dataset_purchase.tgz")
CSV = Path("purchase/dataset_purchase")
CSV_MEMBER = "dataset_purchase"


def read_purchase_npz(path: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Purchase100 from ``purchase100.npz``; an unknown git blob id only warns."""
    spec = spec or PURCHASE
    x, y = read_npz(path, spec)
    return _dataset(x, y, path, spec)


def read_purchase_tgz(path: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Purchase100 from ``dataset_purchase.tgz``, whose git blob id must be the published one."""
    spec = spec or PURCHASE
    check_archive(path, spec)
    data = read_members(path, [CSV_MEMBER])[CSV_MEMBER]
    x, y = _parse(data, f"{display_path(path)}:{CSV_MEMBER}", spec)
    return _dataset(x, y, path, spec)


def read_purchase_csv(path: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Purchase100 from the extracted ``dataset_purchase`` CSV."""
    spec = spec or PURCHASE
    x, y = _parse(path.read_bytes(), display_path(path), spec)
    return _dataset(x, y, path, spec)


def load_purchase(data_dir: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Purchase100 from the first form present under ``data_dir/purchase`` (see module docstring).

    ``spec`` defaults to :data:`PURCHASE`; a variant lets tests accept small archives.
    """
    spec = spec or PURCHASE
    data_dir = Path(data_dir)
    if (data_dir / NPZ).is_file():
        return read_purchase_npz(data_dir / NPZ, spec=spec)
    if (data_dir / TGZ).is_file():
        return read_purchase_tgz(data_dir / TGZ, spec=spec)
    if (data_dir / CSV).is_file():
        return read_purchase_csv(data_dir / CSV, spec=spec)
    raise DataError(missing_message(data_dir))


def missing_message(data_dir: Path) -> str:
    """Exactly which files would make Purchase100 loadable from ``data_dir``."""
    return (f"Purchase100 is missing: put one of "
            f"{display_path(data_dir / NPZ)} (git blob {min(PURCHASE.npz_blob_ids)}), "
            f"{display_path(data_dir / TGZ)} (git blob {min(PURCHASE.archive_ids)}), "
            f"or the extracted CSV {display_path(data_dir / CSV)}: run "
            f"`fedmist data download purchase` (or pass --download), or "
            f"`fedmist data import purchase FILE` to install a copy you have")


def synthetic_purchase(data_dir: Path | None, seed: int = 0) -> Dataset:
    """Seeded synthetic data at Purchase100's shape with uniform labels.

    ``data_dir`` is accepted for symmetry with :func:`fedmist.data.texas.synthetic_texas`;
    no Purchase100 file is needed or read.
    """
    d = make_synthetic(PURCHASE.rows, PURCHASE.n_features, PURCHASE.num_classes, seed=seed,
                       name="synthetic:purchase")
    return Dataset(name=d.name, x=d.x, y=d.y, num_classes=d.num_classes, synthetic=True,
                   source=f"{d.source}, uniform labels")


def _parse(data: bytes, what: str, spec: TabularSpec) -> tuple[np.ndarray, np.ndarray]:
    raw, x = parse_binary_csv(data, spec.n_features, label_first=True, what=what)
    x = check_features(x, spec, what)
    assert raw is not None  # label_first=True always returns labels
    return x, one_based_labels(raw, len(x), spec, what)


def _dataset(x: np.ndarray, y: np.ndarray, path: Path, spec: TabularSpec) -> Dataset:
    return Dataset(name=spec.name, x=x, y=y, num_classes=spec.num_classes,
                   source=display_path(path))
