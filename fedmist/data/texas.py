"""Texas100: 67,330 hospital discharge records, 6,169 binary features, 100 classes.

Accepted forms, tried in this order under ``<data_dir>/texas/``:

1. ``texas100.npz`` with keys ``features`` and ``labels`` (one-hot, or integer);
2. ``dataset_texas.tgz`` with members ``texas/100/feats`` (CSV of 0/1, no label column) and
   ``texas/100/labels`` (one label 1..100 per line);
3. the extracted pair ``100/feats`` and ``100/labels``.

The shared data directory holds only ``100/labels``; the features must be obtained separately
(see the data README) and installed with ``fedmist data import texas FILE``.
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
    parse_label_lines,
    read_members,
    read_npz,
)
from fedmist.data.paths import display_path
from fedmist.data.synthetic import make_synthetic
from fedmist.errors import DataError

TEXAS = TabularSpec(
    name="texas",
    title="Texas100",
    rows=67_330,
    n_features=6_169,
    num_classes=100,
    archive_hash="git-blob",
    archive_ids=frozenset({"966f7ff40b24cf5912ff84759aab9adb8c25f30e"}),
    npz_blob_ids=frozenset({"b9be7604db17e9b09ee1b53e2e7c715186c0ff19"}),
)

NPZ = Path("texas/texas100.npz")
TGZ = Path("texas/dataset_texas.tgz")
FEATS = Path("texas/100/feats")
LABELS = Path("texas/100/labels")
FEATS_MEMBER = "texas/100/feats"
LABELS_MEMBER = "texas/100/labels"


def read_texas_npz(path: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Texas100 from ``texas100.npz``; an unknown git blob id only warns."""
    spec = spec or TEXAS
    x, y = read_npz(path, spec)
    return _dataset(x, y, path, spec)


def read_texas_tgz(path: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Texas100 from ``dataset_texas.tgz``, whose git blob id must be the published one."""
    spec = spec or TEXAS
    check_archive(path, spec)
    members = read_members(path, [FEATS_MEMBER, LABELS_MEMBER])
    where = display_path(path)
    x, y = _parse_pair(members[FEATS_MEMBER], members[LABELS_MEMBER],
                       f"{where}:{FEATS_MEMBER}", f"{where}:{LABELS_MEMBER}", spec)
    return _dataset(x, y, path, spec)


def read_texas_csv(feats: Path, labels: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Texas100 from the extracted ``feats`` CSV and its row-aligned ``labels`` file."""
    spec = spec or TEXAS
    x, y = _parse_pair(feats.read_bytes(), labels.read_bytes(),
                       display_path(feats), display_path(labels), spec)
    return _dataset(x, y, feats, spec)


def load_texas(data_dir: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Texas100 from the first form present under ``data_dir/texas`` (see module docstring).

    ``spec`` defaults to :data:`TEXAS`; a variant lets tests accept small archives.
    """
    spec = spec or TEXAS
    data_dir = Path(data_dir)
    if (data_dir / NPZ).is_file():
        return read_texas_npz(data_dir / NPZ, spec=spec)
    if (data_dir / TGZ).is_file():
        return read_texas_tgz(data_dir / TGZ, spec=spec)
    feats, labels = data_dir / FEATS, data_dir / LABELS
    if feats.is_file() and labels.is_file():
        return read_texas_csv(feats, labels, spec=spec)
    raise DataError(missing_message(data_dir))


def missing_message(data_dir: Path) -> str:
    """Why Texas100 cannot be loaded from ``data_dir``, and exactly which files would do."""
    options = (f"{display_path(data_dir / NPZ)} (git blob {min(TEXAS.npz_blob_ids)}), "
               f"{display_path(data_dir / TGZ)} (git blob {min(TEXAS.archive_ids)}), "
               f"or {display_path(data_dir / FEATS)} beside {LABELS.name}")
    fix = ("run `fedmist data download texas` (or pass --download), or "
           "`fedmist data import texas FILE` to install a copy you have")
    if (data_dir / LABELS).is_file():
        return (f"Texas100 features are missing: only the labels are present "
                f"({display_path(data_dir / LABELS)}); put one of {options}; {fix}")
    if (data_dir / FEATS).is_file():
        return (f"Texas100 labels are missing: {display_path(data_dir / FEATS)} needs "
                f"{display_path(data_dir / LABELS)} beside it; or put {options}; {fix}")
    return f"Texas100 is missing: put one of {options}; {fix}"


def synthetic_texas(data_dir: Path | None, seed: int = 0) -> Dataset:
    """Seeded synthetic data at Texas100's shape, for speed work and demos without the features.

    Uses the real label vector from ``data_dir/texas/100/labels`` when present, so the class
    balance (236 to 3,046 records per class) matches the real benchmark; otherwise labels are
    uniform over the 100 classes.
    """
    labels = None
    if data_dir is not None and (Path(data_dir) / LABELS).is_file():
        path = Path(data_dir) / LABELS
        raw = parse_label_lines(path.read_bytes(), display_path(path))
        if raw.size != TEXAS.rows:
            raise DataError(f"{display_path(path)} has {raw.size} labels, expected {TEXAS.rows}; "
                            f"it is not the published Texas100 label file")
        labels = one_based_labels(raw, raw.size, TEXAS, display_path(path))
    d = make_synthetic(TEXAS.rows, TEXAS.n_features, TEXAS.num_classes, seed=seed, labels=labels,
                       name="synthetic:texas")
    balance = "real Texas100 labels" if labels is not None else "uniform labels"
    return Dataset(name=d.name, x=d.x, y=d.y, num_classes=d.num_classes, synthetic=True,
                   source=f"{d.source}, {balance}")


def _parse_pair(feats: bytes, labels: bytes, feats_what: str, labels_what: str,
                spec: TabularSpec) -> tuple[np.ndarray, np.ndarray]:
    _, x = parse_binary_csv(feats, spec.n_features, label_first=False, what=feats_what)
    x = check_features(x, spec, feats_what)
    y = one_based_labels(parse_label_lines(labels, labels_what), len(x), spec, labels_what)
    return x, y


def _dataset(x: np.ndarray, y: np.ndarray, path: Path, spec: TabularSpec) -> Dataset:
    return Dataset(name=spec.name, x=x, y=y, num_classes=spec.num_classes,
                   source=display_path(path))
