"""Location (Bangkok check-ins, Foursquare): 5,010 records, 446 binary features, 30 classes.

Accepted forms under ``<data_dir>/location/``, in this order: the published archive
``dataset_location.tgz`` (sha256-checked; member ``bangkok``), or the extracted ``bangkok``
CSV (first column the label 1..30, quoted or not, then 446 features of 0/1). Nothing is cached
or written: parsing 5,010 rows takes milliseconds, and the data directory may be read-only.
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
)
from fedmist.data.paths import display_path
from fedmist.errors import DataError

LOCATION = TabularSpec(
    name="location",
    title="Location",
    rows=5_010,
    n_features=446,
    num_classes=30,
    archive_hash="sha256",
    archive_ids=frozenset({"927203f85a868f8ee17a0ded1dc61699efe602167beabe34fbf45b4b1de94b33"}),
)

TGZ = Path("location/dataset_location.tgz")
CSV = Path("location/bangkok")
CSV_MEMBER = "bangkok"


def read_location_tgz(path: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Location from ``dataset_location.tgz``, whose sha256 must be the published one."""
    spec = spec or LOCATION
    check_archive(path, spec)
    data = read_members(path, [CSV_MEMBER])[CSV_MEMBER]
    x, y = _parse(data, f"{display_path(path)}:{CSV_MEMBER}", spec)
    return _dataset(x, y, path, spec)


def read_location_csv(path: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Location from the extracted ``bangkok`` CSV (other published copies leave labels unquoted)."""
    spec = spec or LOCATION
    x, y = _parse(path.read_bytes(), display_path(path), spec)
    return _dataset(x, y, path, spec)


def load_location(data_dir: Path, *, spec: TabularSpec | None = None) -> Dataset:
    """Location from ``data_dir/location`` (archive first, then the extracted CSV).

    ``spec`` defaults to :data:`LOCATION`; a variant lets tests accept small archives.
    """
    spec = spec or LOCATION
    data_dir = Path(data_dir)
    if (data_dir / TGZ).is_file():
        return read_location_tgz(data_dir / TGZ, spec=spec)
    if (data_dir / CSV).is_file():
        return read_location_csv(data_dir / CSV, spec=spec)
    raise DataError(missing_message(data_dir))


def missing_message(data_dir: Path) -> str:
    """Exactly which file would make Location loadable from ``data_dir``."""
    return (f"Location is missing: put dataset_location.tgz (GitHub privacytrustlab/datasets, "
            f"sha256 {min(LOCATION.archive_ids)}) at {display_path(data_dir / TGZ)}, "
            f"or its extracted CSV at {display_path(data_dir / CSV)}: run "
            f"`fedmist data download location` (or pass --download), or "
            f"`fedmist data import location FILE` to install a copy you have")


def _parse(data: bytes, what: str, spec: TabularSpec) -> tuple[np.ndarray, np.ndarray]:
    raw, x = parse_binary_csv(data, spec.n_features, label_first=True, what=what)
    x = check_features(x, spec, what)
    assert raw is not None  # label_first=True always returns labels
    return x, one_based_labels(raw, len(x), spec, what)


def _dataset(x: np.ndarray, y: np.ndarray, path: Path, spec: TabularSpec) -> Dataset:
    return Dataset(name=spec.name, x=x, y=y, num_classes=spec.num_classes,
                   source=display_path(path))
