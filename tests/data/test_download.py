"""``fedmist data download`` against an HTTP server on 127.0.0.1 that this test starts.

The download code runs for real (urllib, sockets, Range requests); only the archives are
small. Tiny Texas100/Purchase100 archives cannot carry the published checksums, so tests pin
their own: a ``Source`` for the download, and the loader's spec for the import validation.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import pickle
import re
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedmist.data import download, location, purchase, texas
from fedmist.data.cifar import CIFAR_FOLDERS, cifar_files, load_cifar10
from fedmist.cli.data import data_app
from fedmist.data.download import (
    MIRROR_ENV,
    SOURCES,
    Source,
    dataset_present,
    download_dataset,
    ensure_dataset,
    fetch,
)
from fedmist.data.formats import git_blob_sha1
from fedmist.data.paths import DATA_ENV
from fedmist.errors import DataError

ROWS = 200  # a texas archive of ~0.4 MB: several read chunks either side of a drop
TIMINGS: dict[str, float] = {}  # dataset -> seconds for download_dataset (printed with -s)


# --------------------------------------------------------------------------- the test server


@dataclass
class Server:
    """Serves ``files`` by path; supports ``Range: bytes=N-``; records every request."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    drop_once: set[str] = field(default_factory=set)  # first response cut off halfway
    ignore_range: set[str] = field(default_factory=set)  # answers Range with the whole file
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.removeprefix("/files/")
            state.requests.append((path, self.headers.get("Range")))
            body = state.files.get(path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and path not in state.ignore_range:
                start = int(match[1])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            chunk = body[start:]
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            if path in state.drop_once:
                state.drop_once.discard(path)
                self.wfile.write(chunk[: len(chunk) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(chunk)

    return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # never through a proxy, even if one is set
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}/files"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------- tiny archives


def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _cifar_tgz(name: str) -> bytes:
    """The published layout (one top folder of Python-2 pickles), with 2 images per file."""
    rng = np.random.default_rng(5)
    members = {}
    for f in cifar_files(name):
        d = {"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8), "labels": [0, 1]}
        members[f"{CIFAR_FOLDERS[name]}/{f}"] = pickle.dumps(d, protocol=2)
    return _tgz(members)


@dataclass(frozen=True)
class Tiny:
    """A small archive in the published layout, and the Source that pins it."""

    data: bytes
    source: Source


def _pin(name: str, data: bytes, server: Server, algorithm: str = "git-blob") -> Source:
    filename = SOURCES[name].filename
    if algorithm == "md5":
        checksum = hashlib.md5(data).hexdigest()
    elif algorithm == "sha256":
        checksum = hashlib.sha256(data).hexdigest()
    else:
        checksum = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return Source(filename, (server.url(filename),), checksum, algorithm)  # type: ignore[arg-type]


def _csv(x: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    """The published CSV form (``[label,]0,1,...``), built with numpy: fast at Texas's width."""
    cells = np.full((len(x), 2 * x.shape[1]), ord(","), dtype=np.uint8)
    cells[:, 0::2] = x + ord("0")
    cells[:, -1] = ord("\n")
    if labels is None:
        return cells.tobytes()
    return b"".join(b"%d," % label + row.tobytes() for label, row in zip(labels, cells))


def _table(n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.random((ROWS, n_features)) < 0.12).astype(np.uint8)
    labels = rng.integers(1, 101, size=ROWS)
    labels[:2] = 1, 100
    return x, labels


@functools.cache
def _archives() -> dict[str, bytes]:
    """Built once per session: texas/purchase in the published tgz layout, and CIFAR."""
    tx, ty = _table(6169, 1)
    px, py = _table(600, 2)
    return {
        "texas": _tgz({texas.FEATS_MEMBER: _csv(tx),
                       texas.LABELS_MEMBER: b"".join(b"%d\n" % v for v in ty)}),
        "purchase": _tgz({purchase.CSV_MEMBER: _csv(px, py)}),
        "cifar10": _cifar_tgz("cifar10"),
        "cifar100": _cifar_tgz("cifar100"),
    }


@pytest.fixture
def tiny(server: Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, Tiny]:
    """Tiny texas/purchase/cifar archives on the server; the loaders' specs accept them."""
    out = {}
    for name, data in _archives().items():
        source = _pin(name, data, server, "md5" if name.startswith("cifar") else "git-blob")
        server.files[source.filename] = data
        out[name] = Tiny(data, source)
    for module, attr in ((texas, "TEXAS"), (purchase, "PURCHASE")):
        spec = getattr(module, attr)
        pinned = frozenset({out[spec.name].source.checksum})
        monkeypatch.setattr(module, attr, dataclasses.replace(spec, archive_ids=pinned))
    return out


@pytest.fixture
def real_location(server: Server, shared_data: Path) -> Tiny:
    """The real published Location archive (287 KB) from the shared data directory."""
    data = (shared_data / location.TGZ).read_bytes()
    server.files["dataset_location.tgz"] = data
    source = dataclasses.replace(SOURCES["location"], urls=(server.url("dataset_location.tgz"),))
    return Tiny(data, source)


def _timed(name: str, *args: object, **kwargs: object) -> Path:
    start = time.perf_counter()
    dest = download_dataset(name, *args, **kwargs)  # type: ignore[arg-type]
    TIMINGS[name] = time.perf_counter() - start
    print(f"\n{name}: downloaded and installed in {TIMINGS[name]:.3f} s")
    return dest


def _left_in(data_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")) if data_dir.exists() else []


# --------------------------------------------------------------------------- each dataset


def test_location_real_archive_downloads_and_loads(tmp_path, server, real_location):
    data = tmp_path / "data"
    dest = _timed("location", data, source=real_location.source, progress=True)
    assert dest == data / location.TGZ and dest.read_bytes() == real_location.data
    d = location.load_location(data)
    assert d.x.shape == (5010, 446) and d.num_classes == 30
    assert _left_in(data) == ["location", "location/dataset_location.tgz"]  # no .downloads left


@pytest.mark.parametrize("name", ["texas", "purchase"])
def test_tabular_archive_downloads_validates_and_loads(tmp_path, server, tiny, name):
    data = tmp_path / "data"
    dest = _timed(name, data, source=tiny[name].source, progress=False)
    module = texas if name == "texas" else purchase
    assert dest == data / module.TGZ and dest.read_bytes() == tiny[name].data
    loaded = texas.load_texas(data) if name == "texas" else purchase.load_purchase(data)
    assert loaded.x.shape == (ROWS, 6169 if name == "texas" else 600)
    assert dataset_present(name, data)
    assert not (data / download.DOWNLOADS).exists()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_archive_is_extracted_into_the_torchvision_layout(tmp_path, server, tiny, name):
    data = tmp_path / "data"
    dest = _timed(name, data, source=tiny[name].source, progress=False)
    assert dest == data / name / CIFAR_FOLDERS[name]
    assert sorted(p.name for p in dest.iterdir()) == sorted(cifar_files(name))
    assert _left_in(data / name) == sorted([CIFAR_FOLDERS[name]] + [
        f"{CIFAR_FOLDERS[name]}/{f}" for f in cifar_files(name)])  # no temporary folder left
    assert dataset_present(name, data)
    with open(dest / cifar_files(name)[0], "rb") as f:
        assert pickle.load(f)["labels"] == [0, 1]


def test_cifar_replaces_an_incomplete_folder(tmp_path, server, tiny):
    data = tmp_path / "data"
    stale = data / "cifar10" / CIFAR_FOLDERS["cifar10"]
    stale.mkdir(parents=True)
    (stale / "data_batch_1").write_bytes(b"half")
    download_dataset("cifar10", data, source=tiny["cifar10"].source, progress=False)
    assert (stale / "data_batch_1").read_bytes() != b"half"
    assert dataset_present("cifar10", data)


def test_cifar_loader_error_names_the_download_command(tmp_path):
    with pytest.raises(DataError, match=r"run `fedmist data download cifar10` \(or pass --download\)"):
        load_cifar10(tmp_path)


def test_missing_messages_name_the_download_command(tmp_path):
    for name, load in (("location", location.load_location), ("texas", texas.load_texas),
                       ("purchase", purchase.load_purchase)):
        with pytest.raises(DataError) as e:
            load(tmp_path)
        assert f"run `fedmist data download {name}` (or pass --download)" in str(e.value)
        assert f"`fedmist data import {name} FILE`" in str(e.value)


# --------------------------------------------------------------------------- failures


def test_corrupted_download_is_refused_and_nothing_is_installed(tmp_path, server, tiny):
    data = tmp_path / "data"
    bad = dataclasses.replace(tiny["texas"].source, checksum="0" * 40)
    with pytest.raises(DataError) as e:
        download_dataset("texas", data, source=bad, progress=False)
    message = str(e.value)
    assert "\n" not in message
    assert server.url("dataset_texas.tgz") in message and "expected " + "0" * 40 in message
    assert "`fedmist data import texas FILE`" in message
    assert _left_in(data) == []  # not even the partial file: a retry starts afresh


def test_pinned_archive_still_goes_through_the_import_validation(tmp_path, server, tiny,
                                                                   monkeypatch):
    """The pinned checksum is not the only check: the file is parsed as `data import` does."""
    x, labels = _table(599, 3)  # a column short
    wrong = _tgz({purchase.CSV_MEMBER: _csv(x, labels)})
    server.files["dataset_purchase.tgz"] = wrong
    source = _pin("purchase", wrong, server)
    spec = dataclasses.replace(purchase.PURCHASE, archive_ids=frozenset({source.checksum}))
    monkeypatch.setattr(purchase, "PURCHASE", spec)
    data = tmp_path / "data"
    with pytest.raises(DataError, match="599 feature columns"):
        download_dataset("purchase", data, source=source, progress=False)
    assert _left_in(data) == []


def test_dropped_connection_is_resumed_with_a_range_request(tmp_path, server, tiny):
    data = tmp_path / "data"
    server.drop_once.add("dataset_texas.tgz")
    download_dataset("texas", data, source=tiny["texas"].source, progress=False)
    assert (data / texas.TGZ).read_bytes() == tiny["texas"].data
    half = (len(tiny["texas"].data)) // 2
    assert server.requests == [("dataset_texas.tgz", None),
                               ("dataset_texas.tgz", f"bytes={half}-")]


def test_interrupted_download_resumes_on_the_next_run(tmp_path, server, tiny):
    data = tmp_path / "data"
    source = tiny["purchase"].source
    part = data / download.DOWNLOADS / f"{source.filename}.part"
    part.parent.mkdir(parents=True)
    server.drop_once.add(source.filename)
    with pytest.raises(DataError, match="connection lost at .*run the same command again"):
        fetch(source.urls[0], part, progress=False, attempts=1)
    half = len(tiny["purchase"].data) // 2
    assert part.stat().st_size == half  # kept for the next run; not at the final path
    assert not (data / purchase.TGZ).exists()
    download_dataset("purchase", data, source=source, progress=False)
    assert server.requests[-1] == (source.filename, f"bytes={half}-")
    assert (data / purchase.TGZ).read_bytes() == tiny["purchase"].data
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(tmp_path, server, tiny):
    data = tmp_path / "data"
    source = tiny["texas"].source
    part = data / download.DOWNLOADS / f"{source.filename}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage from an older attempt")
    server.ignore_range.add(source.filename)
    download_dataset("texas", data, source=source, progress=False)
    assert server.requests == [(source.filename, "bytes=29-")]
    assert (data / texas.TGZ).read_bytes() == tiny["texas"].data


def test_part_as_long_as_the_file_is_fetched_again(tmp_path, server, tiny):
    """A 416 answer (nothing left to send) restarts, rather than trusting the old bytes."""
    data = tmp_path / "data"
    source = tiny["cifar10"].source
    part = data / download.DOWNLOADS / f"{source.filename}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * len(tiny["cifar10"].data))
    download_dataset("cifar10", data, source=source, progress=False)
    n = len(tiny["cifar10"].data)
    assert server.requests == [(source.filename, f"bytes={n}-"), (source.filename, None)]
    assert dataset_present("cifar10", data)


def test_existing_different_file_is_replaced_only_with_force(tmp_path, server, tiny):
    data = tmp_path / "data"
    (data / texas.TGZ).parent.mkdir(parents=True)
    (data / texas.TGZ).write_bytes(b"a truncated archive")
    with pytest.raises(DataError, match="already exists.*--force"):
        download_dataset("texas", data, source=tiny["texas"].source, progress=False)
    assert server.requests == []  # refused before downloading anything
    download_dataset("texas", data, source=tiny["texas"].source, force=True, progress=False)
    assert (data / texas.TGZ).read_bytes() == tiny["texas"].data


def test_404_is_one_line_naming_the_address_and_the_manual_alternative(tmp_path, server, tiny):
    data = tmp_path / "data"
    gone = dataclasses.replace(tiny["texas"].source, urls=(server.url("moved/dataset_texas.tgz"),))
    with pytest.raises(DataError) as e:
        download_dataset("texas", data, source=gone, progress=False)
    message = str(e.value)
    assert "\n" not in message
    assert f"{server.url('moved/dataset_texas.tgz')} (HTTP 404" in message
    assert "`fedmist data import texas FILE`" in message
    assert _left_in(data) == []


def test_cifar_failure_names_the_manual_extraction(tmp_path, server, tiny):
    gone = dataclasses.replace(tiny["cifar100"].source, urls=(server.url("nope.tar.gz"),))
    with pytest.raises(DataError, match=r"nope.tar.gz \(HTTP 404.*extract it in .*cifar100"):
        download_dataset("cifar100", tmp_path, source=gone, progress=False)


def test_no_network_is_one_line_naming_the_address(tmp_path, server, tiny):
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/dataset_texas.tgz"
    source = dataclasses.replace(tiny["texas"].source, urls=(url,))
    with pytest.raises(DataError) as e:
        download_dataset("texas", tmp_path / "data", source=source, progress=False)
    assert url in str(e.value) and "\n" not in str(e.value)


def test_next_published_address_is_tried_when_the_first_fails(tmp_path, server, tiny):
    good = tiny["purchase"].source
    source = dataclasses.replace(good, urls=(server.url("old/dataset_purchase.tgz"), good.urls[0]))
    download_dataset("purchase", tmp_path, source=source, progress=False)
    assert [r[0] for r in server.requests] == ["old/dataset_purchase.tgz", "dataset_purchase.tgz"]


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(DataError, match="downloadable are location, texas, purchase, cifar10"):
        download_dataset("mnist", tmp_path)


# --------------------------------------------------------------------------- mirror, data dir


@pytest.fixture
def published(tiny, monkeypatch) -> None:
    """The published table, pinned to the tiny archives (the addresses stay the real ones)."""
    for name, t in tiny.items():
        monkeypatch.setitem(SOURCES, name, dataclasses.replace(t.source, urls=SOURCES[name].urls))


def test_mirror_env_and_data_env_are_honoured_by_ensure_dataset(tmp_path, server, tiny, published,
                                                                monkeypatch):
    data = tmp_path / "env-data"
    monkeypatch.setenv(DATA_ENV, str(data))
    monkeypatch.setenv(MIRROR_ENV, server.base + "/")
    ensure_dataset("purchase", None, download=False)
    ensure_dataset("synthetic:purchase", None, download=True)
    assert server.requests == [] and not data.exists()  # nothing downloads unless asked
    ensure_dataset("purchase", None, download=True)
    assert server.requests == [("dataset_purchase.tgz", None)]
    assert dataset_present("purchase", data)
    ensure_dataset("purchase", None, download=True)  # present: no second request
    assert len(server.requests) == 1


def test_cli_download_with_mirror_option(tmp_path, server, tiny, published):
    data = tmp_path / "data"
    runner = CliRunner()
    args = ["download", "cifar10", "--data-dir", str(data), "--mirror", server.base]
    result = runner.invoke(data_app, args)
    assert result.exit_code == 0, result.output
    assert "cifar10: installed" in result.output
    assert dataset_present("cifar10", data)
    result = runner.invoke(data_app, args)
    assert result.exit_code == 0 and "already present" in result.output
    assert len(server.requests) == 1


def test_cli_download_error_is_one_line_and_exits_2(tmp_path, server, tiny, published):
    result = CliRunner().invoke(data_app, ["download", "texas", "--data-dir", str(tmp_path),
                                           "--mirror", server.url("elsewhere")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download texas: ")
    assert server.url("elsewhere/dataset_texas.tgz") in lines[0]


def test_published_table_pins_every_dataset():
    assert set(SOURCES) == {"location", "texas", "purchase", "cifar10", "cifar100"}
    assert SOURCES["location"].checksum == min(location.LOCATION.archive_ids)
    assert SOURCES["texas"].checksum == min(texas.TEXAS.archive_ids)
    assert SOURCES["purchase"].checksum == min(purchase.PURCHASE.archive_ids)
    assert SOURCES["cifar10"].urls == ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
    for s in SOURCES.values():
        assert all(u.startswith("https://") and u.endswith("/" + s.filename) for u in s.urls)


def test_git_blob_pin_matches_formats(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert download.file_checksum(path, "git-blob") == git_blob_sha1(path)
