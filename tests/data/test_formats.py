"""Every published form of each benchmark parses to the same arrays, and bad files are refused."""

from __future__ import annotations

import dataclasses
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from fedmist.data import cifar, formats, purchase, texas
from fedmist.data.dataset import Dataset
from fedmist.data.formats import TabularSpec, archive_id, git_blob_sha1, parse_binary_csv
from fedmist.data.location import LOCATION, load_location
from fedmist.data.paths import display_path
from fedmist.data.purchase import PURCHASE, load_purchase, synthetic_purchase
from fedmist.data.texas import TEXAS, load_texas, synthetic_texas
from fedmist.errors import DataError

ROWS = 30  # real column counts, few rows: files stay tiny and the real checks apply


def accepting(spec: TabularSpec, archive: Path) -> TabularSpec:
    """``spec`` with ``archive``'s checksum published, so a small test archive is accepted."""
    return dataclasses.replace(spec, archive_ids=frozenset({archive_id(archive, spec)}))


def assert_same(d: Dataset, x: np.ndarray, y: np.ndarray) -> None:
    assert d.x.dtype == np.uint8 and d.y.dtype == np.int64
    np.testing.assert_array_equal(d.x, x)
    np.testing.assert_array_equal(d.y, y)


# --------------------------------------------------------------------------- Texas100


def write_texas_forms(root: Path, t, csv, tgz) -> dict[str, Path]:
    """The same table as one-hot npz, integer npz, tgz and extracted files, in separate dirs."""
    feats, labels = csv(t.x), ("\n".join(map(str, t.labels)) + "\n").encode()
    onehot = np.eye(100, dtype=np.float32)[t.y]
    dirs = {k: root / k for k in ("onehot", "int0", "int1", "tgz", "extracted")}
    (dirs["onehot"] / "texas").mkdir(parents=True)
    np.savez(dirs["onehot"] / texas.NPZ, features=t.x, labels=onehot)
    (dirs["int0"] / "texas").mkdir(parents=True)
    np.savez_compressed(dirs["int0"] / texas.NPZ, features=t.x.astype(np.float32), labels=t.y)
    (dirs["int1"] / "texas").mkdir(parents=True)
    np.savez(dirs["int1"] / texas.NPZ, features=t.x.astype(bool), labels=t.labels)
    tgz(dirs["tgz"] / texas.TGZ, {"texas/100/feats": feats, "texas/100/labels": labels})
    (dirs["extracted"] / texas.FEATS).parent.mkdir(parents=True)
    (dirs["extracted"] / texas.FEATS).write_bytes(feats)
    (dirs["extracted"] / texas.LABELS).write_bytes(labels)
    return dirs


def test_texas_every_form_loads_identical_zero_based_arrays(tmp_path, table, csv, tgz):
    t = table(ROWS, 6169, 100)
    dirs = write_texas_forms(tmp_path, t, csv, tgz)
    spec = accepting(TEXAS, dirs["tgz"] / texas.TGZ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # test npz files are not the published blob
        loaded = {k: load_texas(d, spec=spec) for k, d in dirs.items()}
    for d in loaded.values():
        assert_same(d, t.x, t.y)
        assert (d.name, d.num_classes, d.synthetic) == ("texas", 100, False)
    assert loaded["onehot"].y.min() == 0 and loaded["onehot"].y.max() == 99
    assert loaded["tgz"].source.endswith("dataset_texas.tgz")


def test_texas_prefers_npz_over_archive_and_extracted(tmp_path, table, csv, tgz):
    t = table(ROWS, 6169, 100)
    tgz(tmp_path / texas.TGZ, {"texas/100/feats": b"garbage", "texas/100/labels": b"1\n"})
    np.savez(tmp_path / texas.NPZ, features=t.x, labels=np.eye(100)[t.y])
    with pytest.warns(UserWarning, match="not a known Texas100 npz"):
        d = load_texas(tmp_path)
    assert d.source.endswith("texas100.npz")
    assert_same(d, t.x, t.y)


def test_texas_npz_of_a_known_blob_does_not_warn(tmp_path, table):
    t = table(ROWS, 6169, 100)
    (tmp_path / "texas").mkdir()
    np.savez(tmp_path / texas.NPZ, features=t.x, labels=np.eye(100)[t.y])
    spec = dataclasses.replace(TEXAS, npz_blob_ids=frozenset({git_blob_sha1(tmp_path / texas.NPZ)}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_texas(tmp_path, spec=spec)


def test_texas_archive_with_dot_slash_members_loads(tmp_path, table, csv, tgz):
    t = table(ROWS, 6169, 100)
    labels = ("\n".join(map(str, t.labels))).encode()  # no final newline
    archive = tgz(tmp_path / texas.TGZ, {"./texas/100/feats": csv(t.x, crlf=True),
                                         "./texas/100/labels": labels})
    assert_same(load_texas(tmp_path, spec=accepting(TEXAS, archive)), t.x, t.y)


def test_texas_wrong_column_count_is_refused(tmp_path, table, csv, put):
    t = table(ROWS, 6168, 100)
    put(tmp_path / texas.FEATS, csv(t.x))
    put(tmp_path / texas.LABELS, ("\n".join(map(str, t.labels)) + "\n").encode())
    with pytest.raises(DataError, match="6168 feature columns, expected 6169"):
        load_texas(tmp_path)
    (tmp_path / "npz" / "texas").mkdir(parents=True)
    np.savez(tmp_path / "npz" / texas.NPZ, features=t.x, labels=t.y)
    with pytest.raises(DataError, match="6168 feature columns"):
        load_texas(tmp_path / "npz")


def test_texas_labels_must_align_and_be_in_range(tmp_path, table, csv, put):
    t = table(ROWS, 6169, 100)
    put(tmp_path / texas.FEATS, csv(t.x))
    put(tmp_path / texas.LABELS, ("\n".join(map(str, t.labels[:-1])) + "\n").encode())
    with pytest.raises(DataError, match="29 labels for 30 feature rows"):
        load_texas(tmp_path)
    put(tmp_path / texas.LABELS, ("\n".join(["101"] + list(map(str, t.labels[1:])))).encode())
    with pytest.raises(DataError, match=r"expected 1\.\.100"):
        load_texas(tmp_path)


def test_texas_npz_labels_are_checked(tmp_path, table):
    t = table(ROWS, 6169, 100)
    (tmp_path / "texas").mkdir()
    bad = np.eye(100)[t.y]
    bad[3, 7] = 1  # two classes in one row
    np.savez(tmp_path / texas.NPZ, features=t.x, labels=bad)
    with pytest.raises(DataError, match="not one-hot"):
        load_texas(tmp_path)
    np.savez(tmp_path / texas.NPZ, features=t.x, labels=t.y + 5)  # 5..104
    with pytest.raises(DataError, match="labels 5..104"):
        load_texas(tmp_path)
    np.savez(tmp_path / texas.NPZ, feats=t.x, labels=t.y)
    with pytest.raises(DataError, match="expected 'features' and 'labels'"):
        load_texas(tmp_path)


def test_texas_corrupted_archive_names_expected_and_actual_blob(tmp_path, table, csv, tgz):
    t = table(ROWS, 6169, 100)
    archive = tgz(tmp_path / texas.TGZ, {"texas/100/feats": csv(t.x),
                                         "texas/100/labels": b"1\n" * ROWS})
    with pytest.raises(DataError) as e:
        load_texas(tmp_path)
    message = str(e.value)
    assert "966f7ff40b24cf5912ff84759aab9adb8c25f30e" in message
    assert git_blob_sha1(archive) in message and "corrupted" in message
    assert "\n" not in message


def test_texas_missing_names_the_files_to_put(tmp_path):
    with pytest.raises(DataError) as e:
        load_texas(tmp_path)
    message = str(e.value)
    for rel in (texas.NPZ, texas.TGZ, texas.FEATS):
        assert display_path(tmp_path / rel) in message
    assert "fedmist data import texas FILE" in message


def test_texas_labels_only_says_features_are_missing(tmp_path, put):
    put(tmp_path / texas.LABELS, b"1\n2\n")
    with pytest.raises(DataError, match="features are missing") as e:
        load_texas(tmp_path)
    assert display_path(tmp_path / texas.NPZ) in str(e.value)
    assert "fedmist data import texas FILE" in str(e.value)


def test_shared_texas_labels_only_is_reported(shared_data):
    if not (shared_data / texas.LABELS).is_file() or (shared_data / texas.FEATS).is_file():
        pytest.skip("shared Texas100 is not in the labels-only state")
    with pytest.raises(DataError, match="features are missing"):
        load_texas(shared_data)


def test_synthetic_texas_uses_the_real_label_histogram(tmp_path, monkeypatch, put):
    rng = np.random.default_rng(3)
    labels = rng.choice(np.arange(1, 101), size=TEXAS.rows, p=np.linspace(1, 13, 100) / 700)
    labels[:100] = np.arange(1, 101)
    put(tmp_path / texas.LABELS, ("\n".join(map(str, labels)) + "\n").encode())
    seen: dict[str, object] = {}
    real = texas.make_synthetic

    def narrow(n_rows, n_features, num_classes, **kw):  # real labels, 4 columns: fast
        seen.update(n_rows=n_rows, n_features=n_features, num_classes=num_classes)
        return real(n_rows, 4, num_classes, **kw)

    monkeypatch.setattr(texas, "make_synthetic", narrow)
    d = synthetic_texas(tmp_path, seed=1)
    assert seen == {"n_rows": 67_330, "n_features": 6_169, "num_classes": 100}
    np.testing.assert_array_equal(np.bincount(d.y, minlength=100),
                                  np.bincount(labels - 1, minlength=100))
    assert (d.name, d.synthetic, d.num_classes) == ("synthetic:texas", True, 100)
    uniform = synthetic_texas(None, seed=1)
    assert uniform.synthetic and np.bincount(uniform.y).max() < 2 * TEXAS.rows / 100


def test_synthetic_texas_with_shared_labels_matches_published_balance(shared_data, monkeypatch):
    if not (shared_data / texas.LABELS).is_file():
        pytest.skip("shared Texas100 labels are not present")
    real = texas.make_synthetic
    monkeypatch.setattr(texas, "make_synthetic",
                        lambda n, f, c, **kw: real(n, 4, c, **kw))
    counts = np.bincount(synthetic_texas(shared_data).y, minlength=100)
    assert (counts.min(), counts.max(), counts.sum()) == (236, 3046, 67_330)


def test_synthetic_purchase_shape_and_name(monkeypatch):
    real = purchase.make_synthetic
    seen = {}

    def narrow(n_rows, n_features, num_classes, **kw):
        seen.update(n_rows=n_rows, n_features=n_features, num_classes=num_classes)
        return real(n_rows, 4, num_classes, **kw)

    monkeypatch.setattr(purchase, "make_synthetic", narrow)
    d = synthetic_purchase(None, seed=2)
    assert seen == {"n_rows": 197_324, "n_features": 600, "num_classes": 100}
    assert (d.name, d.synthetic, len(d)) == ("synthetic:purchase", True, 197_324)


# --------------------------------------------------------------------------- Purchase100


def test_purchase_every_form_loads_identical_arrays(tmp_path, table, csv, tgz, put):
    t = table(ROWS, 600, 100, seed=4)
    text = csv(t.x, t.labels)
    a, b, c, e = (tmp_path / k for k in "abce")
    (a / "purchase").mkdir(parents=True)
    np.savez(a / purchase.NPZ, features=t.x, labels=np.eye(100, dtype=np.uint8)[t.y])
    archive = tgz(b / purchase.TGZ, {"dataset_purchase": text})
    put(c / purchase.CSV, text)
    put(e / purchase.CSV, csv(t.x, t.labels, crlf=True, final_newline=False))
    spec = accepting(PURCHASE, archive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for root in (a, b, c, e):
            d = load_purchase(root, spec=spec)
            assert_same(d, t.x, t.y)
            assert (d.name, d.num_classes) == ("purchase", 100)


def test_purchase_csv_in_another_number_format_uses_the_generic_parser(tmp_path, table, csv, put):
    t = table(ROWS, 600, 100, seed=5)
    put(tmp_path / purchase.CSV, csv(t.x, t.labels, fmt="{:.1f}"))  # "1.0,0.0,..."
    assert_same(load_purchase(tmp_path), t.x, t.y)


def test_purchase_csv_shape_and_value_errors(tmp_path, table, csv, put):
    t = table(ROWS, 601, 100, seed=6)
    put(tmp_path / purchase.CSV, csv(t.x, t.labels))
    with pytest.raises(DataError, match="601 feature columns, expected 600"):
        load_purchase(tmp_path)
    lines = csv(t.x[:, :600], t.labels).split(b"\n")
    lines[7] = lines[7][:-2]  # one row loses its last feature
    put(tmp_path / purchase.CSV, b"\n".join(lines))
    with pytest.raises(DataError, match="not a CSV of numbers"):
        load_purchase(tmp_path)
    x = t.x[:, :600].copy()
    x[2, 5] = 2
    put(tmp_path / purchase.CSV, csv(x, t.labels))
    with pytest.raises(DataError, match="other than 0 and 1"):
        load_purchase(tmp_path)
    put(tmp_path / purchase.CSV, csv(t.x[:, :600], np.where(t.labels == 1, 0, t.labels)))
    with pytest.raises(DataError, match=r"labels 0\.\.100, expected 1\.\.100"):
        load_purchase(tmp_path)


def test_purchase_corrupted_archive_and_missing_files(tmp_path, table, csv, tgz):
    with pytest.raises(DataError) as e:
        load_purchase(tmp_path)
    for rel in (purchase.NPZ, purchase.TGZ, purchase.CSV):
        assert display_path(tmp_path / rel) in str(e.value)
    t = table(ROWS, 600, 100)
    tgz(tmp_path / purchase.TGZ, {"dataset_purchase": csv(t.x, t.labels)})
    with pytest.raises(DataError, match="3efa7476ad5ed7ac3e558d28585a186b38fc5f19"):
        load_purchase(tmp_path)


def test_archive_without_the_member_is_refused(tmp_path, tgz):
    archive = tgz(tmp_path / purchase.TGZ, {"other": b"1,0\n"})
    with pytest.raises(DataError, match="has no member dataset_purchase"):
        load_purchase(tmp_path, spec=accepting(PURCHASE, archive))


# --------------------------------------------------------------------------- Location


def test_location_archive_and_unquoted_csv_load_identical_arrays(tmp_path, table, csv, tgz, put):
    t = table(ROWS, 446, 30, seed=7)
    archive = tgz(tmp_path / "a" / "location" / "dataset_location.tgz",
                  {"bangkok": csv(t.x, t.labels, quote=True)})
    put(tmp_path / "b" / "location" / "bangkok", csv(t.x, t.labels))
    d_a = load_location(tmp_path / "a", spec=accepting(LOCATION, archive))
    d_b = load_location(tmp_path / "b")
    for d in (d_a, d_b):
        assert_same(d, t.x, t.y)
        assert (d.name, d.num_classes) == ("location", 30)


def test_location_checksum_mismatch_names_expected_sha256(tmp_path, table, csv, tgz):
    t = table(ROWS, 446, 30)
    tgz(tmp_path / "location" / "dataset_location.tgz", {"bangkok": csv(t.x, t.labels, quote=True)})
    with pytest.raises(DataError, match="927203f85a868f8ee17a0ded1dc61699efe602167beabe34fbf45b4b1de94b33"):
        load_location(tmp_path)


def test_location_missing_names_the_path(tmp_path):
    with pytest.raises(DataError) as e:
        load_location(tmp_path)
    assert display_path(tmp_path / "location" / "dataset_location.tgz") in str(e.value)


def test_real_location_from_shared_data(shared_data):
    d = load_location(shared_data)
    assert d.x.shape == (5010, 446) and d.x.dtype == np.uint8
    assert d.num_classes == 30 and d.y.min() == 0 and d.y.max() == 29
    counts = np.bincount(d.y)
    assert (counts.min(), counts.max()) == (97, 308)
    assert set(np.unique(d.x)) == {0, 1}
    assert abs(d.x.mean() - 0.120) < 0.001


# --------------------------------------------------------------------------- helpers


def test_git_blob_sha1_matches_git_hash_object(tmp_path):
    f = tmp_path / "hello"
    f.write_bytes(b"hello\n")
    assert git_blob_sha1(f) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object


def test_fast_csv_parser_agrees_with_loadtxt(table, csv, monkeypatch):
    # Published layouts must take the fast path (loadtxt takes minutes on Texas's 830 MB).
    def no_generic(*args, **kwargs):
        raise AssertionError("the generic parser was used for a published layout")

    monkeypatch.setattr(formats, "_parse_generic", no_generic)
    t = table(50, 9, 5, seed=8)
    for data in (csv(t.x, t.labels), csv(t.x, t.labels, quote=True, crlf=True),
                 csv(t.x, t.labels, final_newline=False) + b"\n\n"):
        labels, x = parse_binary_csv(data, 9, label_first=True, what="t")
        expected = np.loadtxt(data.decode().splitlines(), delimiter=",", quotechar='"', dtype=int)
        np.testing.assert_array_equal(labels, expected[:, 0])
        np.testing.assert_array_equal(x, expected[:, 1:])
    # Labels of equal width make every line equally long: the zero-copy strided path.
    labels, x = parse_binary_csv(csv(t.x, t.labels + 10), 9, label_first=True, what="t")
    np.testing.assert_array_equal(labels, t.labels + 10)
    np.testing.assert_array_equal(x, t.x)
    for data in (csv(t.x), csv(t.x, crlf=True, final_newline=False)):
        labels, x = parse_binary_csv(data, 9, label_first=False, what="t")
        assert labels is None
        np.testing.assert_array_equal(x, t.x)


# --------------------------------------------------------------------------- CIFAR


def write_fake_cifar10(root: Path, per_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A tiny ``cifar-10-batches-py`` in the real pickle format; returns (images NHWC, labels)."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(9)
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as f:
            # Python-2 pickles: str keys once read with encoding="latin1", as torchvision does.
            pickle.dump({"batch_label": name, "labels": y, "data": data,
                         "filenames": ["x.png"] * per_batch}, f, protocol=2)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels += y
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)],
                     "num_cases_per_batch": per_batch, "num_vis": 3072}, f, protocol=2)
    return np.concatenate(images), np.array(labels)


def test_cifar_loader_reads_the_torchvision_layout(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    import torchvision.datasets.cifar as tv_cifar

    images, labels = write_fake_cifar10(tmp_path)
    # The fake files cannot match torchvision's md5 list of the real batches.
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    d = cifar.load_cifar10(tmp_path)
    assert d.x.shape == (24, 3, 32, 32) and d.x.dtype == np.float32
    assert (d.name, d.num_classes) == ("cifar10", 10)
    np.testing.assert_array_equal(d.y, labels)  # train batches first, then test
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2470, 0.2435, 0.2616])
    expected = (images.transpose(0, 3, 1, 2) / 255.0 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(d.x, expected, atol=1e-5)


def test_cifar_missing_names_the_folder(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py") as e:
        cifar.load_cifar10(tmp_path)
    assert display_path(tmp_path / "cifar10") in str(e.value)
    (tmp_path / "cifar100").mkdir()
    (tmp_path / "cifar100" / "cifar-100-python.tar.gz").write_bytes(b"x")
    with pytest.raises(DataError, match="extract .*cifar-100-python.tar.gz"):
        cifar.load_cifar100(tmp_path)


def test_cifar_without_torchvision_says_what_to_install(tmp_path, monkeypatch):
    write_fake_cifar10(tmp_path, per_batch=1)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes the import fail
    with pytest.raises(DataError, match=r"pip install fedmist\[vision\]"):
        cifar.load_cifar10(tmp_path)
