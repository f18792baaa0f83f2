"""Readers and checks shared by the binary tabular benchmarks (Location, Texas100, Purchase100).

Each benchmark is described by a :class:`TabularSpec`; the readers here parse the published
file forms (CSV, ``.tgz`` archive, ``.npz``) into ``uint8`` features and 0-based ``int64``
labels and check them against the spec, raising :class:`~fedmist.errors.DataError` with a
one-line message that names the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fedmist.data.paths import display_path
from fedmist.errors import DataError

_NL, _CR, _COMMA, _ZERO = ord("\n"), ord("\r"), ord(","), ord("0")
# Rows per block when gathering CSV bytes: bounds the temporary index array to ~64 MiB.
_GATHER_ELEMENTS = 8_000_000


@dataclass(frozen=True)
class TabularSpec:
    """What a benchmark's files must look like.

    Row counts are not enforced (subsets and small test files are legitimate); the column
    count, the label range and, for the canonical archives, the checksum are.
    """

    name: str  # registry name, e.g. "texas"
    title: str  # human name, e.g. "Texas100"
    rows: int  # canonical row count (for listings and synthetic twins)
    n_features: int
    num_classes: int
    archive_hash: Literal["sha256", "git-blob"]  # how the .tgz's published id is computed
    archive_ids: frozenset[str]  # accepted .tgz ids; a mismatch is an error
    npz_blob_ids: frozenset[str] = frozenset()  # known .npz git blob ids; a mismatch warns


# --------------------------------------------------------------------------- checksums


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large files do not sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id ``git hash-object FILE`` prints: sha1 of ``b"blob <size>\\0"`` + content.

    The README publishes these ids because they can be read from repository listings even
    where the file content itself could not be fetched.
    """
    h = hashlib.sha1()
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def archive_id(path: Path, spec: TabularSpec) -> str:
    """The id of an archive computed the way ``spec`` publishes it."""
    return sha256_file(path) if spec.archive_hash == "sha256" else git_blob_sha1(path)


def check_archive(path: Path, spec: TabularSpec) -> None:
    """Refuse an archive whose checksum is not a published one: it is truncated or altered."""
    got = archive_id(path, spec)
    if got not in spec.archive_ids:
        expected = " or ".join(sorted(spec.archive_ids))
        kind = "sha256" if spec.archive_hash == "sha256" else "git blob id"
        raise DataError(
            f"{display_path(path)} is corrupted or not the published {spec.title} archive: "
            f"{kind} {got}, expected {expected}; download it again"
        )


def warn_unknown_npz(path: Path, spec: TabularSpec) -> None:
    """Warn (only) when an npz is not a known version: re-saved copies are legitimate."""
    if not spec.npz_blob_ids:
        return
    got = git_blob_sha1(path)
    if got not in spec.npz_blob_ids:
        warnings.warn(
            f"{display_path(path)} has git blob id {got}, not a known {spec.title} npz "
            f"({', '.join(sorted(spec.npz_blob_ids))}); using it since its shape checks passed",
            UserWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- archives


def read_members(path: Path, members: list[str]) -> dict[str, bytes]:
    """Read the named members of a tar archive (``./`` prefixes in the archive are ignored)."""
    wanted = set(members)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path) as tar:
            for info in tar:
                name = info.name.removeprefix("./")
                if name in wanted and info.isfile():
                    f = tar.extractfile(info)
                    if f is not None:
                        found[name] = f.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{display_path(path)} is not a readable tar archive ({e}); "
                        f"download it again") from e
    missing = [m for m in members if m not in found]
    if missing:
        raise DataError(f"{display_path(path)} has no member {', '.join(missing)}; "
                        f"it is not the published archive, download it again")
    return found


# --------------------------------------------------------------------------- CSV parsing


def parse_binary_csv(data: bytes, n_features: int, *, label_first: bool,
                     what: str) -> tuple[np.ndarray | None, np.ndarray]:
    """Parse ``[label,]f1,...,fn`` rows of 0/1 into (raw labels or None, uint8 features).

    The published files write every feature as one character, so rows are fixed-width after
    the label and numpy can slice the bytes directly (Texas's 830 MB CSV in seconds, where
    ``np.loadtxt`` takes minutes). Anything else (``1.0``, spaces, a different column count)
    goes through ``np.loadtxt``, and the caller's shape checks report what is wrong.
    Labels are returned as written (1-based in every published file).
    """
    if not data.strip():
        raise DataError(f"{what} is empty")
    fast = _parse_fixed_width(data, n_features, label_first)
    if fast is not None:
        return fast
    return _parse_generic(data, label_first, what)


def _line_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end-of-content) of every non-empty line; end excludes ``\\n`` and ``\\r``."""
    step = 1 << 26  # find newlines in 64 MiB blocks: no full-size boolean temporary
    ends = np.concatenate([np.flatnonzero(buf[i:i + step] == _NL) + i
                           for i in range(0, buf.size, step)])
    if buf[-1] != _NL:
        ends = np.append(ends, buf.size)
    starts = np.concatenate(([0], ends[:-1] + 1))
    content_end = ends.copy()
    has_cr = (content_end > starts) & (buf[np.maximum(content_end - 1, 0)] == _CR)
    content_end[has_cr] -= 1
    keep = content_end > starts
    return starts[keep], content_end[keep]


def _row_blocks(buf: np.ndarray, first: np.ndarray, width: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (row slice, bytes[rows, width]) starting at ``first[row]`` for every row."""
    stride = np.diff(first)
    if first.size == 1 or (stride == stride[0]).all():
        # Equal line lengths (no label, or labels of equal width): a zero-copy 2-D view.
        step = int(stride[0]) if first.size > 1 else width
        if step >= width:
            view = np.lib.stride_tricks.as_strided(
                buf[int(first[0]):], shape=(first.size, width), strides=(step, 1), writeable=False)
            yield slice(0, first.size), view
            return
    rows_per_block = max(1, _GATHER_ELEMENTS // width)
    cols = np.arange(width)
    for lo in range(0, first.size, rows_per_block):
        hi = min(lo + rows_per_block, first.size)
        yield slice(lo, hi), buf[first[lo:hi, None] + cols]


def _parse_fixed_width(data: bytes, n_features: int,
                       label_first: bool) -> tuple[np.ndarray | None, np.ndarray] | None:
    """The fast path of :func:`parse_binary_csv`; ``None`` when the bytes do not fit it."""
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, content_end = _line_bounds(buf)
    width = 2 * n_features - 1  # "0,1,...,0"
    first = content_end - width
    if label_first:
        # A label of at least one character, then the comma before the first feature.
        if (first - 1 <= starts).any() or (buf[first - 1] != _COMMA).any():
            return None
    elif (first != starts).any():
        return None
    x = np.empty((starts.size, n_features), dtype=np.uint8)
    for rows, block in _row_blocks(buf, first, width):
        if width > 1 and (block[:, 1::2] != _COMMA).any():
            return None
        values = block[:, 0::2] - np.uint8(_ZERO)  # '0'->0, '1'->1; others wrap to >1
        if (values > 1).any():
            return None
        x[rows] = values
    if not label_first:
        return None, x
    labels = np.empty(starts.size, dtype=np.int64)
    for i, (lo, hi) in enumerate(zip(starts.tolist(), (first - 1).tolist(), strict=True)):
        text = data[lo:hi].strip().strip(b'"')
        if not text.isdigit():
            return None  # e.g. one more column than expected: let the generic path report it
        labels[i] = int(text)
    return labels, x


def _parse_generic(data: bytes, label_first: bool,
                   what: str) -> tuple[np.ndarray | None, np.ndarray]:
    """Slow, permissive CSV parse; shape problems surface in the caller's checks."""
    try:
        table = np.loadtxt(io.StringIO(data.decode("utf-8")), delimiter=",", quotechar='"',
                           dtype=np.float32, ndmin=2)
    except (ValueError, UnicodeDecodeError) as e:
        reason = str(e).split(";")[0].strip().splitlines()[0]
        raise DataError(f"{what} is not a CSV of numbers ({reason}); "
                        f"it is not in the published format") from e
    if label_first:
        if table.shape[1] < 2:
            raise DataError(f"{what} has {table.shape[1]} column, expected a label and features")
        labels = table[:, 0]
        if not np.array_equal(labels, np.round(labels)):
            raise DataError(f"{what} has non-integer labels in its first column")
        return labels.astype(np.int64), as_binary(table[:, 1:], what)
    return None, as_binary(table, what)


def parse_label_lines(data: bytes, what: str) -> np.ndarray:
    """One integer per line (Texas's ``labels`` file), returned as written."""
    tokens = data.split()
    try:
        return np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError as e:
        raise DataError(f"{what} must hold one integer label per line ({e})") from e


# --------------------------------------------------------------------------- checks


def as_binary(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` as uint8, refusing anything but 0/1 (the benchmarks are binary records)."""
    if x.dtype == np.bool_:
        return x.view(np.uint8)
    if x.dtype == np.uint8:
        binary = x
    else:
        binary = x.astype(np.uint8)
        if not np.array_equal(binary, x):
            raise DataError(f"{what} has feature values other than 0 and 1")
    if binary.size and binary.max() > 1:
        raise DataError(f"{what} has feature values other than 0 and 1")
    return binary


def check_features(x: np.ndarray, spec: TabularSpec, what: str) -> np.ndarray:
    """2-D with the spec's column count, binary; returned as uint8."""
    if x.ndim != 2:
        raise DataError(f"{what} features have shape {x.shape}, expected (rows, {spec.n_features})")
    if x.shape[1] != spec.n_features:
        raise DataError(f"{what} has {x.shape[1]} feature columns, expected {spec.n_features} "
                        f"for {spec.title}; it is not the published file")
    if x.shape[0] == 0:
        raise DataError(f"{what} has no rows")
    return as_binary(x, what)


def one_based_labels(raw: np.ndarray, n_rows: int, spec: TabularSpec, what: str) -> np.ndarray:
    """Labels written 1..C (every published CSV) → 0-based int64, checking count and range."""
    if raw.shape != (n_rows,):
        raise DataError(f"{what} has {raw.size} labels for {n_rows} feature rows; "
                        f"they must be row-aligned")
    if raw.min() < 1 or raw.max() > spec.num_classes:
        raise DataError(f"{what} has labels {raw.min()}..{raw.max()}, expected 1..{spec.num_classes} "
                        f"({spec.num_classes} classes)")
    return raw.astype(np.int64) - 1


def npz_labels(labels: np.ndarray, n_rows: int, spec: TabularSpec, what: str) -> np.ndarray:
    """An npz's labels → 0-based int64.

    One-hot ``(rows, C)`` labels (the published npz files) are arg-maxed. 1-D integer labels
    are 0-based (0..C-1), except that a vector within 1..C that contains C can only be
    1-based, so it is shifted.
    """
    if labels.ndim == 2:
        if labels.shape != (n_rows, spec.num_classes):
            raise DataError(f"{what} one-hot labels have shape {labels.shape}, "
                            f"expected ({n_rows}, {spec.num_classes})")
        if not ((labels == 0) | (labels == 1)).all() or not (labels.sum(axis=1) == 1).all():
            raise DataError(f"{what} labels are 2-D but not one-hot (exactly one 1 per row)")
        return labels.argmax(axis=1).astype(np.int64)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise DataError(f"{what} labels have shape {labels.shape}, expected ({n_rows},) "
                        f"or one-hot ({n_rows}, {spec.num_classes})")
    if not np.array_equal(labels, np.round(labels)):
        raise DataError(f"{what} has non-integer labels")
    y = labels.astype(np.int64)
    if y.min() >= 1 and y.max() == spec.num_classes:
        return y - 1
    if y.min() < 0 or y.max() >= spec.num_classes:
        raise DataError(f"{what} has labels {y.min()}..{y.max()}, expected 0..{spec.num_classes - 1} "
                        f"(or one-hot)")
    return y


def read_npz(path: Path, spec: TabularSpec) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 features, 0-based labels) from an npz with keys ``features`` and ``labels``."""
    what = display_path(path)
    try:
        d = np.load(path, allow_pickle=False)
        if not isinstance(d, np.lib.npyio.NpzFile):
            raise DataError(f"{what} holds a single array, expected an .npz with 'features' "
                            f"and 'labels'")
        with d:
            keys = set(d.files)
            if not {"features", "labels"} <= keys:
                raise DataError(f"{what} has keys {sorted(keys)}, expected 'features' and 'labels'")
            features, labels = d["features"], d["labels"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{what} is not a readable .npz file ({e}); download it again") from e
    x = check_features(features, spec, what)
    y = npz_labels(labels, len(x), spec, what)
    warn_unknown_npz(path, spec)
    return x, y


def npz_feature_shape(path: Path) -> tuple[int, ...] | None:
    """Shape of an npz's ``features`` array from its header alone (for cheap listings)."""
    try:
        with zipfile.ZipFile(path) as z, z.open("features.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(f)
            return tuple(int(s) for s in shape)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
