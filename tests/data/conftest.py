"""Builders for small files in the exact published formats of the tabular benchmarks."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

#: The real shared data directory, beside the project checkout (absent on some machines).
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@dataclass(frozen=True)
class Table:
    """Binary features and labels as written in the files (1-based)."""

    x: np.ndarray
    labels: np.ndarray

    @property
    def y(self) -> np.ndarray:
        return self.labels - 1


def make_table(rows: int, n_features: int, num_classes: int, seed: int = 0) -> Table:
    """Random binary rows; labels include 1 and ``num_classes`` so 1-based vectors are unambiguous."""
    rng = np.random.default_rng(seed)
    x = (rng.random((rows, n_features)) < 0.12).astype(np.uint8)
    labels = rng.integers(1, num_classes + 1, size=rows)
    labels[0], labels[1] = 1, num_classes
    return Table(x=x, labels=labels.astype(np.int64))


def to_csv(x: np.ndarray, labels: np.ndarray | None = None, *, quote: bool = False,
           crlf: bool = False, final_newline: bool = True, fmt: str = "{}") -> bytes:
    """CSV bytes of ``[label,]features`` rows, optionally with quoted labels or CRLF endings."""
    lines = []
    for i, row in enumerate(x):
        fields = [fmt.format(v) for v in row.tolist()]
        if labels is not None:
            label = str(int(labels[i]))
            fields.insert(0, f'"{label}"' if quote else label)
        lines.append(",".join(fields))
    sep = "\r\n" if crlf else "\n"
    return (sep.join(lines) + (sep if final_newline else "")).encode()


def write_tgz(path: Path, members: dict[str, bytes]) -> Path:
    """A gzip tar archive holding ``members`` (name → content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def table() -> Callable[..., Table]:
    return make_table


@pytest.fixture
def csv() -> Callable[..., bytes]:
    return to_csv


@pytest.fixture
def tgz() -> Callable[[Path, dict[str, bytes]], Path]:
    return write_tgz


@pytest.fixture
def put() -> Callable[[Path, bytes], Path]:
    return write_bytes


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "location" / "dataset_location.tgz").is_file():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
