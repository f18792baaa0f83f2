"""``fedmist data download``: fetch a benchmark from where it is published, verify, install.

Nothing here runs unless asked (``fedmist data download NAME``, or ``--download`` through
:func:`ensure_dataset`): runs must not depend on the network.

The steps, so that a truncated or altered file never reaches its final path:

1. fetch into ``<data_dir>/.downloads/FILE.part``, resuming a partial file with an HTTP Range
   request (and starting over when the server ignores it);
2. check the whole file against the checksum pinned in :data:`SOURCES`;
3. install it: Location, Texas100 and Purchase100 through
   :func:`fedmist.data.store.import_dataset` (the validation of ``fedmist data import``: full
   parse, shape and archive checks, atomic copy); CIFAR by extracting into a temporary folder
   beside the destination and renaming it into place.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from fedmist.data import location, purchase, texas
from fedmist.data.cifar import CIFAR_ARCHIVES, CIFAR_FOLDERS, cifar_files
from fedmist.data.formats import git_blob_sha1, sha256_file
from fedmist.data.paths import display_path, resolve_data_dir
from fedmist.data.store import import_dataset, list_datasets
from fedmist.errors import DataError

#: Environment variable naming a base address that holds the same file names (``--mirror``).
MIRROR_ENV = "FEDMIST_MIRROR"

#: Partial and not-yet-verified downloads live here, under the data directory (same file
#: system, so a later run resumes them); no loader looks inside it.
DOWNLOADS = ".downloads"

Algorithm = Literal["sha256", "md5", "git-blob"]

_GITHUB = "https://raw.githubusercontent.com/privacytrustlab/datasets/master/"
_NUS = "https://www.comp.nus.edu.sg/~reza/files/"  # Shokri's original addresses
_TORONTO = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class Source:
    """Where one dataset file is published, and the checksum that pins its content.

    ``urls`` are tried in order; all must serve the same bytes (so a partial file from one may
    be resumed from another: the checksum catches any difference).
    """

    filename: str
    urls: tuple[str, ...]
    checksum: str
    algorithm: Algorithm


#: The published files. Location's sha256 is the one in shared/data/README.md; CIFAR's md5s are
#: the ones torchvision publishes (``tgz_md5``). Texas100 and Purchase100 have no published
#: checksum at all: what can be verified is the git blob id (``git hash-object``) of
#: privacytrustlab/datasets' copy, read from repository listings (the same ids
#: ``fedmist data import`` requires of these archives). A copy at Shokri's old NUS address that
#: differs byte-wise is refused rather than trusted.
SOURCES: dict[str, Source] = {
    "location": Source("dataset_location.tgz", (_GITHUB + "dataset_location.tgz",),
                       "927203f85a868f8ee17a0ded1dc61699efe602167beabe34fbf45b4b1de94b33", "sha256"),
    "texas": Source("dataset_texas.tgz", (_GITHUB + "dataset_texas.tgz", _NUS + "dataset_texas.tgz"),
                    "966f7ff40b24cf5912ff84759aab9adb8c25f30e", "git-blob"),
    "purchase": Source("dataset_purchase.tgz",
                       (_GITHUB + "dataset_purchase.tgz", _NUS + "dataset_purchase.tgz"),
                       "3efa7476ad5ed7ac3e558d28585a186b38fc5f19", "git-blob"),
    "cifar10": Source(CIFAR_ARCHIVES["cifar10"], (_TORONTO + CIFAR_ARCHIVES["cifar10"],),
                      "c58f30108f718f92721af3b95e74349a", "md5"),
    "cifar100": Source(CIFAR_ARCHIVES["cifar100"], (_TORONTO + CIFAR_ARCHIVES["cifar100"],),
                       "eb9058c3a382ffc7106e4002c42a8d85", "md5"),
}

#: Where ``import_dataset`` puts each downloaded archive (checked up front: an existing file
#: there is only replaced with ``force``, so say so before a long download, not after).
_TGZ: dict[str, Path] = {"location": location.TGZ, "texas": texas.TGZ, "purchase": purchase.TGZ}

_CHUNK = 1 << 16


# --------------------------------------------------------------------------- public API


def ensure_dataset(name: str, data_dir: Path | None, download: bool) -> None:
    """Download ``name`` when it is missing and ``download`` is true; otherwise do nothing.

    For the CLI's ``--download`` flag: names that cannot be downloaded (synthetic, unknown)
    are left to the loader to report.
    """
    if not download or name not in SOURCES:
        return
    root = resolve_data_dir(data_dir)
    if not dataset_present(name, root):
        download_dataset(name, root)


def dataset_present(name: str, data_dir: Path) -> bool:
    """Whether ``fedmist data list`` reports ``name`` as present (usable) in ``data_dir``."""
    return any(s.name == name and s.status == "present" for s in list_datasets(Path(data_dir)))


def download_dataset(name: str, data_dir: Path | None = None, *, source: Source | None = None,
                     mirror: str | None = None, force: bool = False,
                     progress: bool = True) -> Path:
    """Fetch, verify and install ``name``; returns the installed file or folder.

    ``source`` defaults to the published one in :data:`SOURCES` (tests pass their own);
    ``mirror`` (default ``$FEDMIST_MIRROR``) replaces its addresses with ``MIRROR/FILENAME``.
    An existing archive at the destination is refused before downloading unless ``force``
    (callers check :func:`dataset_present` first). Raises a one-line DataError naming the
    address(es) and the manual alternative when nothing verifiable could be fetched.
    """
    if name not in SOURCES:
        raise DataError(f"cannot download dataset {name!r}: downloadable are {', '.join(SOURCES)}")
    src = source or SOURCES[name]
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if mirror:
        src = replace(src, urls=(f"{mirror.rstrip('/')}/{src.filename}",))
    root = resolve_data_dir(data_dir)
    if name not in CIFAR_FOLDERS and not force and (root / _TGZ[name]).exists():
        raise DataError(f"{display_path(root / _TGZ[name])} already exists (see `fedmist data "
                        f"list`); pass --force to download it again and replace it")
    downloads = root / DOWNLOADS
    archive = downloads / src.filename
    part = downloads / f"{src.filename}.part"
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot write {display_path(downloads)} ({e.strerror or e}); pass "
                        f"--data-dir (or set FEDMIST_DATA) to a writable directory") from e
    try:
        failures: list[str] = []
        for url in src.urls:
            try:
                fetch(url, part, progress=progress, label=f"{name} {src.filename}")
                got = file_checksum(part, src.algorithm)
                if got != src.checksum:
                    part.unlink()
                    raise DataError(f"{src.algorithm} {got}, expected {src.checksum}: corrupted "
                                    f"or changed at that address")
            except DataError as e:
                failures.append(f"{url} ({e})")
                continue
            os.replace(part, archive)
            return _install(name, archive, root, force)
        raise DataError(f"cannot download {name}: {'; '.join(failures)}; nothing was installed. "
                        f"{_manual(name, src, root)}")
    finally:
        if archive.exists():
            archive.unlink()
        _remove_if_empty(downloads)


def fetch(url: str, part: Path, *, progress: bool = True, label: str = "",
          attempts: int = 3, timeout: float = 30.0) -> None:
    """Download ``url`` into ``part``, resuming what ``part`` already holds.

    A dropped connection is retried (``attempts`` in all) from where it stopped; the partial
    file is kept when all attempts fail, so running the command again resumes it. Raises a
    DataError whose message is the reason only (the caller names the address).
    """
    reason = "no attempt made"
    for _ in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "fedmist-data-download"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=timeout) as resp:
                if have and not _resumes_at(resp, have):
                    if resp.status == 206:  # resumed somewhere else: ask again without Range
                        part.unlink()
                        reason = "server resumed at the wrong offset"
                        continue
                    have = 0  # Range ignored: the whole file follows, start over
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else None
                _stream(resp, part, have, total, progress, label)
            if total is not None and part.stat().st_size < total:
                raise http.client.IncompleteRead(b"", total - part.stat().st_size)
            return
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # the part is already whole or too long: start over
                part.unlink()
                reason = "HTTP 416 on resume"
                continue
            raise DataError(f"HTTP {e.code} {e.reason}") from e
        except urllib.error.URLError as e:  # no network, DNS, refused: retrying will not help
            raise DataError(f"{e.reason}") from e
        except (OSError, http.client.HTTPException) as e:  # dropped mid-way: resume
            size = part.stat().st_size if part.exists() else 0
            reason = f"connection lost at {size:,} bytes: {type(e).__name__}"
    raise DataError(f"{reason}; run the same command again to resume")


def file_checksum(path: Path, algorithm: Algorithm) -> str:
    """The hex digest of ``path`` the way ``algorithm`` is published."""
    if algorithm == "sha256":
        return sha256_file(path)
    if algorithm == "git-blob":
        return git_blob_sha1(path)
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- helpers


def _resumes_at(resp: http.client.HTTPResponse, have: int) -> bool:
    """Whether a response to a Range request continues the file at byte ``have``."""
    if resp.status != 206:
        return False
    content_range = resp.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    return content_range.startswith(f"bytes {have}-")


def _stream(resp: http.client.HTTPResponse, part: Path, have: int, total: int | None,
            progress: bool, label: str) -> None:
    """Append (``have`` > 0) or write the body to ``part`` under a size/speed/ETA bar."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar, \
            open(part, "ab" if have else "wb") as out:
        task = bar.add_task(label, total=total, completed=have)
        for chunk in iter(lambda: resp.read(_CHUNK), b""):
            out.write(chunk)
            bar.advance(task, len(chunk))


def _install(name: str, archive: Path, root: Path, force: bool) -> Path:
    if name in CIFAR_FOLDERS:
        return _install_cifar(name, archive, root)
    return import_dataset(name, archive, root, force=force)


def _install_cifar(name: str, archive: Path, root: Path) -> Path:
    """Extract the CIFAR archive beside its destination, check it, and rename it into place.

    An existing folder is replaced only after the new one is complete; the archive's md5 was
    checked already, so only the expected folder is taken from it.
    """
    folder = CIFAR_FOLDERS[name]
    final = root / name / folder
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=final.parent))
    except OSError as e:
        raise DataError(f"cannot write {display_path(final.parent)} ({e.strerror or e}); pass "
                        f"--data-dir (or set FEDMIST_DATA) to a writable directory") from e
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers()
                       if m.name.removeprefix("./").split("/")[0] == folder]
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **kwargs)
        new = tmp / folder
        missing = [f for f in cifar_files(name) if not (new / f).is_file()]
        if missing:
            raise DataError(f"{archive.name} lacks {folder}/{', '.join(missing)}; it is not the "
                            f"published archive")
        if final.exists():
            os.replace(final, tmp / "previous")
        os.replace(new, final)
        return final
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot extract {archive.name} into {display_path(final.parent)} "
                        f"({e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _manual(name: str, src: Source, root: Path) -> str:
    """The alternative to downloading through fedmist, for the error message."""
    if name in CIFAR_FOLDERS:
        return (f"Download {src.filename} yourself and extract it in "
                f"{display_path(root / name)} (tar xzf), or pass --mirror URL")
    return (f"Download {src.filename} yourself and run `fedmist data import {name} FILE`, "
            f"or pass --mirror URL")


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # holds a partial download to resume, or was never created
