"""Installing user-supplied benchmark files, and reporting which datasets are usable.

``import_dataset`` parses a file completely with the same readers the loaders use before
copying it, so a file that is in place is one that loads.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fedmist.data import location, purchase, texas
from fedmist.data.cifar import (
    CIFAR_ARCHIVES,
    CIFAR_FOLDERS,
    CIFAR_ROWS,
    CIFAR_SHAPE,
    cifar_files,
    torchvision_available,
)
from fedmist.data.dataset import Dataset
from fedmist.data.formats import (
    TabularSpec,
    archive_id,
    git_blob_sha1,
    npz_feature_shape,
)
from fedmist.data.paths import display_path
from fedmist.errors import DataError

Status = Literal["present", "incomplete", "missing"]
FileKind = Literal["npz", "tgz", "csv"]

#: Datasets ``import_dataset`` accepts; CIFAR comes as a folder (see ``fedmist.data.cifar``).
IMPORTABLE: tuple[str, ...] = ("location", "texas", "purchase")


@dataclass(frozen=True)
class DatasetStatus:
    """One row of ``fedmist data list``."""

    name: str
    status: Status
    path: Path  # the file or folder found, else where the preferred form is expected
    rows: int | None = None  # known without parsing the data, else None
    feature_shape: tuple[int, ...] | None = None
    note: str = ""


def import_dataset(name: str, file: Path, data_dir: Path, *, force: bool = False) -> Path:
    """Validate ``file`` as dataset ``name`` and copy it to its canonical place under ``data_dir``.

    The form (``.npz``, ``.tgz`` archive, or CSV) is recognised from the content, not the file
    name. The file is parsed fully and checksum-checked first; an existing different file at
    the destination is only replaced with ``force=True``. Returns the destination.
    """
    if name not in IMPORTABLE:
        extra = " (CIFAR: put the extracted folder in place, see `fedmist data list`)" \
            if name.startswith("cifar") else ""
        raise DataError(f"cannot import dataset {name!r}: importable are "
                        f"{', '.join(IMPORTABLE)}{extra}")
    file, data_dir = Path(file), Path(data_dir)
    if not file.is_file():
        raise DataError(f"{display_path(file)} does not exist or is not a file")
    kind = _file_kind(file)
    if kind == "csv":
        _check_csv_head(name, file)
    dest = data_dir / _destination(name, kind)
    _validate(name, kind, file, data_dir)
    if dest.exists() and not force:
        if filecmp.cmp(file, dest, shallow=False):
            return dest
        raise DataError(f"{display_path(dest)} already exists and differs from "
                        f"{display_path(file)}; pass --force to replace it")
    _copy(file, dest)
    return dest


def list_datasets(data_dir: Path) -> list[DatasetStatus]:
    """Which datasets ``data_dir`` holds, without parsing them (archives are checksummed)."""
    data_dir = Path(data_dir)
    return [_location_status(data_dir), _texas_status(data_dir), _purchase_status(data_dir),
            _cifar_status("cifar10", data_dir), _cifar_status("cifar100", data_dir)]


# --------------------------------------------------------------------------- import helpers


def _file_kind(file: Path) -> FileKind:
    if zipfile.is_zipfile(file):
        return "npz"
    if tarfile.is_tarfile(file):
        return "tgz"
    return "csv"


#: What ``fedmist data import NAME FILE`` accepts, for messages.
FORMS = {"location": "dataset_location.tgz or the extracted bangkok CSV",
         "texas": "texas100.npz, dataset_texas.tgz or the extracted 100/feats CSV",
         "purchase": "purchase100.npz, dataset_purchase.tgz or the extracted CSV"}
TITLES = {"location": "Location", "texas": "Texas100", "purchase": "Purchase100"}


def _is_number(field: bytes) -> bool:
    try:
        float(field.strip().strip(b'"'))
    except ValueError:
        return False
    return True


def _check_csv_head(name: str, file: Path) -> None:
    """A file that is neither an npz nor a tar archive must at least start like a CSV of numbers
    (and, for Texas, like its feats CSV); otherwise it is no form of the dataset at all."""
    with file.open("rb") as f:
        head = f.readline(1 << 20)
    fields = head.strip().split(b",")
    if len(fields) < 2 or not all(_is_number(v) for v in fields):
        raise DataError(f"{display_path(file)} is not a recognised {TITLES[name]} file: not an .npz, not a "
                        f".tgz archive, and not a CSV of numbers; import {FORMS[name]}")
    if name == "texas" and len(fields) != texas.TEXAS.n_features:
        raise DataError(f"{display_path(file)} is not a recognised Texas100 file: a CSV of {len(fields)} "
                        f"columns, where the feats CSV has {texas.TEXAS.n_features}; import {FORMS[name]}")


def _destination(name: str, kind: FileKind) -> Path:
    table: dict[tuple[str, FileKind], Path] = {
        ("location", "tgz"): location.TGZ,
        ("location", "csv"): location.CSV,
        ("texas", "npz"): texas.NPZ,
        ("texas", "tgz"): texas.TGZ,
        ("texas", "csv"): texas.FEATS,
        ("purchase", "npz"): purchase.NPZ,
        ("purchase", "tgz"): purchase.TGZ,
        ("purchase", "csv"): purchase.CSV,
    }
    if (name, kind) not in table:
        raise DataError(f"{name} has no published .{kind} form; import dataset_location.tgz "
                        f"or the extracted bangkok CSV")
    return table[(name, kind)]


def _validate(name: str, kind: FileKind, file: Path, data_dir: Path) -> Dataset:
    """Parse ``file`` fully with the loader's reader; raises DataError if it would not load."""
    if name == "texas" and kind == "csv":
        labels = data_dir / texas.LABELS
        if not labels.is_file():
            raise DataError(f"{display_path(file)} looks like the Texas100 feats CSV, which needs "
                            f"its labels at {display_path(labels)}; import texas100.npz or "
                            f"dataset_texas.tgz instead, or put the labels file there first")
        return texas.read_texas_csv(file, labels)
    readers: dict[tuple[str, FileKind], Callable[[Path], Dataset]] = {
        ("location", "tgz"): location.read_location_tgz,
        ("location", "csv"): location.read_location_csv,
        ("texas", "npz"): texas.read_texas_npz,
        ("texas", "tgz"): texas.read_texas_tgz,
        ("purchase", "npz"): purchase.read_purchase_npz,
        ("purchase", "tgz"): purchase.read_purchase_tgz,
        ("purchase", "csv"): purchase.read_purchase_csv,
    }
    return readers[(name, kind)](file)


def _copy(file: Path, dest: Path) -> None:
    """Copy via a temporary file and an atomic rename: a reader never sees half a file."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        os.close(fd)
        try:
            shutil.copyfile(file, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        raise DataError(f"cannot write {display_path(dest)} ({e.strerror or e}); pass --data-dir "
                        f"(or set FEDMIST_DATA) to a writable directory") from e


# --------------------------------------------------------------------------- listing helpers


def _archive_status(name: str, path: Path, spec: TabularSpec) -> DatasetStatus:
    got = archive_id(path, spec)
    if got in spec.archive_ids:
        return DatasetStatus(name, "present", path, spec.rows, (spec.n_features,),
                             "published archive, checksum ok")
    return DatasetStatus(name, "incomplete", path, None, None,
                         f"checksum mismatch ({got[:12]}...): corrupted, download it again")


def _npz_status(name: str, path: Path, spec: TabularSpec) -> DatasetStatus:
    shape = npz_feature_shape(path)
    if shape is None or len(shape) != 2:
        return DatasetStatus(name, "incomplete", path, None, None,
                             "unreadable npz or no 'features' array")
    known = git_blob_sha1(path) in spec.npz_blob_ids
    note = "published npz" if known else "unknown npz version (loads with a warning)"
    if shape[1] != spec.n_features:
        return DatasetStatus(name, "incomplete", path, shape[0], shape[1:],
                             f"{shape[1]} feature columns, expected {spec.n_features}")
    return DatasetStatus(name, "present", path, shape[0], shape[1:], note)


def _location_status(data_dir: Path) -> DatasetStatus:
    spec = location.LOCATION
    if (data_dir / location.TGZ).is_file():
        return _archive_status("location", data_dir / location.TGZ, spec)
    if (data_dir / location.CSV).is_file():
        return DatasetStatus("location", "present", data_dir / location.CSV, None,
                             (spec.n_features,), "extracted CSV, checked on load")
    return DatasetStatus("location", "missing", data_dir / location.TGZ, None, None,
                         "run `fedmist data download location`, or import dataset_location.tgz")


def _texas_status(data_dir: Path) -> DatasetStatus:
    spec = texas.TEXAS
    if (data_dir / texas.NPZ).is_file():
        return _npz_status("texas", data_dir / texas.NPZ, spec)
    if (data_dir / texas.TGZ).is_file():
        return _archive_status("texas", data_dir / texas.TGZ, spec)
    feats, labels = data_dir / texas.FEATS, data_dir / texas.LABELS
    if feats.is_file() and labels.is_file():
        return DatasetStatus("texas", "present", feats, None, (spec.n_features,),
                             "extracted feats + labels, checked on load")
    if labels.is_file():
        return DatasetStatus("texas", "incomplete", labels, None, None,
                             "labels only; run `fedmist data download texas`, or import "
                             "texas100.npz or dataset_texas.tgz "
                             "(synthetic:texas uses these labels)")
    if feats.is_file():
        return DatasetStatus("texas", "incomplete", feats, None, None,
                             f"labels missing: put them at {display_path(labels)}")
    return DatasetStatus("texas", "missing", data_dir / texas.NPZ, None, None,
                         "run `fedmist data download texas`, or import texas100.npz or "
                         "dataset_texas.tgz")


def _purchase_status(data_dir: Path) -> DatasetStatus:
    spec = purchase.PURCHASE
    if (data_dir / purchase.NPZ).is_file():
        return _npz_status("purchase", data_dir / purchase.NPZ, spec)
    if (data_dir / purchase.TGZ).is_file():
        return _archive_status("purchase", data_dir / purchase.TGZ, spec)
    if (data_dir / purchase.CSV).is_file():
        return DatasetStatus("purchase", "present", data_dir / purchase.CSV, None,
                             (spec.n_features,), "extracted CSV, checked on load")
    return DatasetStatus("purchase", "missing", data_dir / purchase.NPZ, None, None,
                         "run `fedmist data download purchase`, or import purchase100.npz "
                         "or dataset_purchase.tgz")


def _cifar_status(name: str, data_dir: Path) -> DatasetStatus:
    folder = data_dir / name / CIFAR_FOLDERS[name]
    archive = data_dir / name / CIFAR_ARCHIVES[name]
    missing = [f for f in cifar_files(name) if not (folder / f).is_file()]
    if not missing:
        note = "" if torchvision_available() else "loading needs pip install fedmist[vision]"
        return DatasetStatus(name, "present", folder, CIFAR_ROWS, CIFAR_SHAPE, note)
    if archive.is_file():
        return DatasetStatus(name, "incomplete", archive, None, None,
                             f"archive not extracted: tar xzf it in {display_path(archive.parent)}")
    if folder.is_dir():
        return DatasetStatus(name, "incomplete", folder, None, None,
                             f"missing {', '.join(missing)}")
    return DatasetStatus(name, "missing", folder, None, None,
                         f"run `fedmist data download {name}`, or extract "
                         f"{CIFAR_ARCHIVES[name]} into {name}/")
