"""CIFAR-10 and CIFAR-100 from a local copy, read with torchvision (the ``vision`` extra).

Expected layout, exactly what torchvision's ``download=True`` would create (nothing is
downloaded here: runs must not depend on the network)::

    <data_dir>/cifar10/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <data_dir>/cifar100/cifar-100-python/{train, test, meta}

Train rows come first, then test rows, so row numbers (stored in run directories) are stable.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np

from fedmist.data.dataset import Dataset
from fedmist.data.paths import display_path
from fedmist.errors import DataError

CIFAR_FOLDERS: dict[str, str] = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_ARCHIVES: dict[str, str] = {"cifar10": "cifar-10-python.tar.gz",
                                  "cifar100": "cifar-100-python.tar.gz"}
CIFAR_ROWS = 60_000  # 50,000 train + 10,000 test, for both
CIFAR_SHAPE: tuple[int, ...] = (3, 32, 32)
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
# Per-channel mean and standard deviation of each training set (RGB, pixel values in [0, 1]).
# Fixed published values rather than recomputed ones, so every run normalises identically.
_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


def cifar_files(name: str) -> list[str]:
    """The files torchvision reads from the extracted folder of ``name``."""
    if name == "cifar10":
        return [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    return ["train", "test", "meta"]


def torchvision_available() -> bool:
    """Whether the optional ``vision`` extra is installed."""
    return importlib.util.find_spec("torchvision") is not None


def load_cifar10(data_dir: Path) -> Dataset:
    """CIFAR-10: 60,000 × (3, 32, 32) float32, normalised per channel; 10 classes."""
    return _load("cifar10", Path(data_dir))


def load_cifar100(data_dir: Path) -> Dataset:
    """CIFAR-100 (fine labels): 60,000 × (3, 32, 32) float32, normalised per channel; 100 classes."""
    return _load("cifar100", Path(data_dir))


def synthetic_cifar(name: str, seed: int = 0, rows: int = CIFAR_ROWS) -> Dataset:
    """Seeded random images at ``name``'s shape (``rows`` × 3 × 32 × 32 float32, uniform labels).

    For speed work on the CIFAR models (AlexNet, ResNet-18, DenseNet-BC) without the files or
    torchvision: the FLOPs per example are the real ones. Each class has its own random mean
    image under unit noise, so training learns something and losses stay finite.
    """
    rng = np.random.default_rng([seed, _NUM_CLASSES[name]])
    y = rng.integers(0, _NUM_CLASSES[name], size=rows, dtype=np.int64)
    means = rng.standard_normal((_NUM_CLASSES[name], *CIFAR_SHAPE), dtype=np.float32) * 0.5
    x = np.empty((rows, *CIFAR_SHAPE), dtype=np.float32)
    for start in range(0, rows, 8192):  # chunked: no second full-size temporary
        stop = min(start + 8192, rows)
        x[start:stop] = rng.standard_normal((stop - start, *CIFAR_SHAPE), dtype=np.float32)
        x[start:stop] += means[y[start:stop]]
    return Dataset(name=f"synthetic:{name}", x=x, y=y, num_classes=_NUM_CLASSES[name], synthetic=True,
                   source=f"synthetic_cifar({name!r}, seed={seed}): random images, uniform labels")


def synthetic_cifar10(data_dir: Path | None, seed: int = 0) -> Dataset:
    return synthetic_cifar("cifar10", seed)


def synthetic_cifar100(data_dir: Path | None, seed: int = 0) -> Dataset:
    return synthetic_cifar("cifar100", seed)


def _load(name: str, data_dir: Path) -> Dataset:
    root = data_dir / name
    folder = root / CIFAR_FOLDERS[name]
    missing = [f for f in cifar_files(name) if not (folder / f).is_file()]
    if missing:
        archive = root / CIFAR_ARCHIVES[name]
        hint = (f"extract {display_path(archive)} there (tar xzf)" if archive.is_file() else
                f"run `fedmist data download {name}` (or pass --download), or put the "
                f"extracted {CIFAR_FOLDERS[name]} folder from {CIFAR_ARCHIVES[name]} "
                f"(https://www.cs.toronto.edu/~kriz/cifar.html) in {display_path(root)}")
        raise DataError(f"{name} is missing: {display_path(folder)} lacks "
                        f"{', '.join(missing)}; {hint}")
    try:
        from torchvision import datasets
    except ImportError as e:
        raise DataError(f"loading {name} needs torchvision: pip install fedmist[vision]") from e
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = cls(root=str(root), train=True, download=False)
        test = cls(root=str(root), train=False, download=False)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        # torchvision's own message suggests download=True, which fedmist never does.
        raise DataError(f"{display_path(folder)} is corrupted (a file fails torchvision's md5 "
                        f"check or cannot be read); extract {CIFAR_ARCHIVES[name]} again") from e
    images = np.concatenate([train.data, test.data])  # (n, 32, 32, 3) uint8
    y = np.concatenate([np.asarray(train.targets), np.asarray(test.targets)]).astype(np.int64)
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)  # NCHW
    x /= 255.0
    x -= np.asarray(_MEAN[name], dtype=np.float32)[None, :, None, None]
    x /= np.asarray(_STD[name], dtype=np.float32)[None, :, None, None]
    return Dataset(name=name, x=x, y=y, num_classes=_NUM_CLASSES[name],
                   source=display_path(folder))
