"""Dataset registry: name -> loader. Adding a dataset is one module and one line here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from fedmist.data.dataset import Dataset
from fedmist.data.synthetic import make_synthetic
from fedmist.errors import ConfigError

Loader = Callable[[Path, int], Dataset]  # (data_dir, seed) -> Dataset; seed is for synthetic data

# Paper sizes of the target training set (MIST §5); 0 in a config means "use these".
PAPER_TRAIN_SIZE = {"location": 4000, "texas": 40000, "purchase": 40000,
                    "cifar10": 20000, "cifar100": 20000}
DEFAULT_MODEL = {"location": "mlp", "texas": "mlp", "purchase": "mlp",
                 "cifar10": "alexnet", "cifar100": "alexnet", "synthetic": "mlp"}

DATASETS: dict[str, Loader] = {}


def register_dataset(name: str, loader: Loader) -> None:
    if name in DATASETS:
        raise ValueError(f"dataset {name!r} is already registered")
    DATASETS[name] = loader


def _lazy(module: str, func: str, seeded: bool = False) -> Loader:
    """Import loaders on first use so optional extras (torchvision) stay optional."""
    def load(data_dir: Path, seed: int) -> Dataset:
        import importlib
        fn = getattr(importlib.import_module(module), func)
        return fn(data_dir, seed=seed) if seeded else fn(data_dir)
    return load


register_dataset("location", _lazy("fedmist.data.location", "load_location"))
register_dataset("texas", _lazy("fedmist.data.texas", "load_texas"))
register_dataset("purchase", _lazy("fedmist.data.purchase", "load_purchase"))
register_dataset("synthetic:texas", _lazy("fedmist.data.texas", "synthetic_texas", seeded=True))
register_dataset("synthetic:purchase", _lazy("fedmist.data.purchase", "synthetic_purchase", seeded=True))
register_dataset("synthetic:cifar10", _lazy("fedmist.data.cifar", "synthetic_cifar10", seeded=True))
register_dataset("synthetic:cifar100", _lazy("fedmist.data.cifar", "synthetic_cifar100", seeded=True))
register_dataset("cifar10", _lazy("fedmist.data.cifar", "load_cifar10"))
register_dataset("cifar100", _lazy("fedmist.data.cifar", "load_cifar100"))


def parse_synthetic(name: str) -> dict[str, int] | None:
    """``synthetic`` or ``synthetic:ROWSxFEATURESxCLASSES`` (e.g. ``synthetic:600x20x4``)."""
    if name == "synthetic":
        return {"n_rows": 1200, "n_features": 32, "num_classes": 4}
    if name.startswith("synthetic:") and name not in DATASETS:
        match = re.fullmatch(r"synthetic:(\d+)x(\d+)x(\d+)", name)
        if match is None:
            raise ConfigError(f"unknown dataset {name!r}; use synthetic:texas, synthetic:purchase, "
                              "synthetic:cifar10, synthetic:cifar100 or "
                              "synthetic:ROWSxFEATURESxCLASSES")
        rows, feats, classes = (int(v) for v in match.groups())
        return {"n_rows": rows, "n_features": feats, "num_classes": classes}
    return None


def base_name(name: str) -> str:
    """The family a dataset name belongs to ("synthetic:texas" -> "texas" for recipes/sizes)."""
    if parse_synthetic(name) is not None:
        return "synthetic"
    return name.split(":", 1)[1] if name.startswith("synthetic:") else name


def dataset_names() -> list[str]:
    return sorted([*DATASETS, "synthetic", "synthetic:ROWSxFEATURESxCLASSES"])


_CACHE: dict[tuple[str, str, int], Dataset] = {}


def load_dataset(name: str, data_dir: str | Path | None = None, seed: int = 0) -> Dataset:
    """Load (and cache per process) a dataset by registry name.

    Clients call this for every message, so the cache keeps the file from being parsed again.
    ``seed`` only matters for synthetic data.
    """
    from fedmist.data.paths import resolve_data_dir

    synth = parse_synthetic(name)
    resolved = "" if synth is not None else str(resolve_data_dir(data_dir or None))
    key = (name, resolved, seed if name.startswith("synthetic") else 0)
    if key in _CACHE:
        return _CACHE[key]
    if synth is not None:
        ds = make_synthetic(seed=seed, name=name, **synth)
    elif name in DATASETS:
        ds = DATASETS[name](Path(resolved), seed)
    else:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    _CACHE[key] = ds
    return ds
