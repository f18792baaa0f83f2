"""Importing files into the data directory, listing what is there, and the ``fedmist data`` CLI."""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedmist.data import location, purchase, texas
from fedmist.cli.data import data_app
from fedmist.data.formats import git_blob_sha1
from fedmist.data.paths import DATA_ENV, resolve_data_dir
from fedmist.data.store import DatasetStatus, import_dataset, list_datasets
from fedmist.errors import DataError

ROWS = 30


def texas_npz(path: Path, t) -> Path:
    buf = io.BytesIO()  # np.savez(path) would append ".npz" to the name
    np.savez(buf, features=t.x, labels=np.eye(100, dtype=np.uint8)[t.y])
    path.write_bytes(buf.getvalue())
    return path


def statuses(data_dir: Path) -> dict[str, DatasetStatus]:
    return {s.name: s for s in list_datasets(data_dir)}


def test_import_texas_npz_copies_into_place_and_lists_present(tmp_path, table):
    t = table(ROWS, 6169, 100)
    src = texas_npz(tmp_path / "download.bin", t)  # the form is recognised from content
    data = tmp_path / "data"
    with pytest.warns(UserWarning, match="not a known Texas100 npz"):
        dest = import_dataset("texas", src, data)
    assert dest == data / "texas" / "texas100.npz"
    assert dest.read_bytes() == src.read_bytes()
    s = statuses(data)["texas"]
    assert (s.status, s.path, s.rows, s.feature_shape) == ("present", dest, ROWS, (6169,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_array_equal(texas.load_texas(data).y, t.y)


def test_import_refuses_to_overwrite_a_different_file_unless_forced(tmp_path, table, csv, put):
    t1, t2 = table(ROWS, 446, 30, seed=1), table(ROWS, 446, 30, seed=2)
    a = put(tmp_path / "a.csv", csv(t1.x, t1.labels))
    b = put(tmp_path / "b.csv", csv(t2.x, t2.labels))
    data = tmp_path / "data"
    dest = import_dataset("location", a, data)
    assert dest == data / "location" / "bangkok"
    assert import_dataset("location", a, data) == dest  # same content: nothing to do
    with pytest.raises(DataError, match="already exists and differs.*--force"):
        import_dataset("location", b, data)
    assert dest.read_bytes() == a.read_bytes()
    import_dataset("location", b, data, force=True)
    np.testing.assert_array_equal(location.load_location(data).x, t2.x)
    assert [p.name for p in dest.parent.iterdir()] == ["bangkok"]  # no temporary left behind


def test_import_refuses_bad_files_and_copies_nothing(tmp_path, table, csv, tgz, put):
    data = tmp_path / "data"
    t = table(ROWS, 600, 100)
    corrupted = tgz(tmp_path / "p.tgz", {"dataset_purchase": csv(t.x, t.labels)})
    with pytest.raises(DataError, match="corrupted"):
        import_dataset("purchase", corrupted, data)
    narrow = put(tmp_path / "p.csv", csv(t.x[:, :599], t.labels))
    with pytest.raises(DataError, match="599 feature columns"):
        import_dataset("purchase", narrow, data)
    with pytest.raises(DataError, match="no published .npz form"):
        import_dataset("location", texas_npz(tmp_path / "t.npz", table(ROWS, 6169, 100)), data)
    with pytest.raises(DataError, match="cannot import dataset 'mnist'"):
        import_dataset("mnist", narrow, data)
    with pytest.raises(DataError, match="does not exist"):
        import_dataset("purchase", tmp_path / "nope.csv", data)
    assert not data.exists()


def test_import_texas_feats_needs_labels_beside_it(tmp_path, table, csv, put):
    t = table(ROWS, 6169, 100)
    feats = put(tmp_path / "feats", csv(t.x))
    data = tmp_path / "data"
    with pytest.raises(DataError, match="needs its labels") as e:
        import_dataset("texas", feats, data)
    assert str(Path("texas") / "100" / "labels") in str(e.value)
    put(data / texas.LABELS, ("\n".join(map(str, t.labels)) + "\n").encode())
    assert statuses(data)["texas"].status == "incomplete"
    assert import_dataset("texas", feats, data) == data / texas.FEATS
    assert statuses(data)["texas"].status == "present"
    np.testing.assert_array_equal(texas.load_texas(data).x, t.x)


def test_import_purchase_archive_with_published_checksum(tmp_path, table, csv, tgz, monkeypatch):
    t = table(ROWS, 600, 100)
    archive = tgz(tmp_path / "dataset_purchase.tgz", {"dataset_purchase": csv(t.x, t.labels)})
    published = dataclasses.replace(purchase.PURCHASE, archive_ids=frozenset({git_blob_sha1(archive)}))
    monkeypatch.setattr(purchase, "PURCHASE", published)
    dest = import_dataset("purchase", archive, tmp_path / "data")
    assert dest == tmp_path / "data" / "purchase" / "dataset_purchase.tgz"
    assert statuses(tmp_path / "data")["purchase"].status == "present"
    np.testing.assert_array_equal(purchase.load_purchase(tmp_path / "data").y, t.y)


def test_import_real_location_archive(tmp_path, shared_data):
    dest = import_dataset("location", shared_data / location.TGZ, tmp_path)
    s = statuses(tmp_path)["location"]
    assert (s.status, s.path, s.rows, s.feature_shape) == ("present", dest, 5010, (446,))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_import_into_read_only_dir_says_to_pick_another(tmp_path, table, csv, put):
    t = table(ROWS, 446, 30)
    src = put(tmp_path / "b.csv", csv(t.x, t.labels))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DataError, match="cannot write .*--data-dir"):
            import_dataset("location", src, ro)
    finally:
        ro.chmod(0o755)


def test_list_reports_missing_incomplete_and_present(tmp_path, tgz, put):
    rows = list_datasets(tmp_path)
    assert [r.name for r in rows] == ["location", "texas", "purchase", "cifar10", "cifar100"]
    assert {r.status for r in rows} == {"missing"}
    assert statuses(tmp_path)["texas"].path == tmp_path / texas.NPZ
    put(tmp_path / texas.LABELS, b"1\n")
    tgz(tmp_path / location.TGZ, {"bangkok": b'"1",0\n'})
    put(tmp_path / "cifar100" / "cifar-100-python.tar.gz", b"x")
    for name in ("train", "test", "meta"):
        put(tmp_path / "cifar10" / "cifar-10-batches-py" / name, b"x")  # wrong folder contents
    s = statuses(tmp_path)
    assert (s["texas"].status, s["texas"].path) == ("incomplete", tmp_path / texas.LABELS)
    assert s["location"].status == "incomplete" and "checksum mismatch" in s["location"].note
    assert s["cifar100"].status == "incomplete" and "not extracted" in s["cifar100"].note
    assert s["cifar10"].status == "incomplete" and "data_batch_1" in s["cifar10"].note
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        put(tmp_path / "cifar10" / "cifar-10-batches-py" / name, b"x")
    c10 = statuses(tmp_path)["cifar10"]
    assert (c10.status, c10.rows, c10.feature_shape) == ("present", 60_000, (3, 32, 32))


def test_list_shared_data(shared_data):
    s = statuses(shared_data)
    assert s["location"].status == "present" and s["location"].rows == 5010
    if (shared_data / texas.LABELS).is_file() and not (shared_data / texas.FEATS).is_file():
        assert s["texas"].status == "incomplete"


# --------------------------------------------------------------------------- data dir


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    from fedmist.data import paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_ENV, raising=False)
    project = tmp_path / "elsewhere" / "project"
    project.mkdir(parents=True)
    monkeypatch.setattr(paths, "PROJECT_ROOT", project)
    assert resolve_data_dir(None) == tmp_path / "shared" / "data"  # nothing exists: default
    (tmp_path / "elsewhere" / "shared" / "data").mkdir(parents=True)
    assert resolve_data_dir(None) == tmp_path / "elsewhere" / "shared" / "data"  # beside the project
    (tmp_path / "shared" / "data").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert resolve_data_dir(None) == tmp_path / "shared" / "data"  # ../shared/data
    (work / "shared" / "data").mkdir(parents=True)
    assert resolve_data_dir(None) == work / "shared" / "data"  # ./shared/data first
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir("given") == work / "given"
    assert resolve_data_dir(Path("given")).is_absolute()


# --------------------------------------------------------------------------- CLI


def test_cli_import_then_list(tmp_path, table, csv, put):
    t = table(ROWS, 446, 30)
    src = put(tmp_path / "bangkok.csv", csv(t.x, t.labels, quote=True))
    data = tmp_path / "data"
    runner = CliRunner()
    r = runner.invoke(data_app, ["import", "location", str(src), "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    assert "location: installed" in r.stdout
    assert (data / location.CSV).read_bytes() == src.read_bytes()
    r = runner.invoke(data_app, ["list", "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.stdout.splitlines() if "location" in ln and "bangkok" in ln)
    assert "present" in line


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, monkeypatch, table, csv, put):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    runner = CliRunner()
    r = runner.invoke(data_app, ["import", "purchase", str(tmp_path / "missing.csv")])
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    assert "missing.csv" in r.stderr and r.stdout == ""
    t = table(ROWS, 446, 30)
    src = put(tmp_path / "x.csv", csv(t.x, t.labels))
    assert runner.invoke(data_app, ["import", "location", str(src)]).exit_code == 0
    other = put(tmp_path / "y.csv", csv(t.x[::-1], t.labels[::-1]))
    r = runner.invoke(data_app, ["import", "location", str(other)])
    assert r.exit_code == 2 and "--force" in r.stderr
    r = runner.invoke(data_app, ["import", "location", str(other), "--force"])
    assert r.exit_code == 0
    assert (tmp_path / "data" / location.CSV).read_bytes() == other.read_bytes()


def test_cli_import_shows_an_unknown_npz_version_as_a_warning_line(tmp_path, table):
    src = texas_npz(tmp_path / "texas100.npz", table(ROWS, 6169, 100))
    r = CliRunner().invoke(data_app, ["import", "texas", str(src), "--data-dir", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("warning: ") and "not a known Texas100 npz" in r.stderr
    assert "texas: installed" in r.stdout
