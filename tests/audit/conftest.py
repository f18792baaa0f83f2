"""A real, tiny, fully trained run directory in the DESIGN.md layout, and a real shadow trainer.

Nothing here is mocked: models are MLPs trained with SGD on synthetic data, saved and loaded
like the engine's runs (config.json, model.pt, split.npz).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from fedmist.data.dataset import Dataset
from fedmist.data.split import make_split
from fedmist.data.synthetic import make_synthetic
from fedmist.models.mlp import MLP


@dataclass
class TinyConfig:
    """The recipe of a tiny run: what the shadow trainer needs to repeat it."""

    n_rows: int = 400
    n_features: int = 60
    num_classes: int = 20
    train_size: int = 200
    hidden: int = 64
    epochs: int = 300
    lr: float = 0.1
    density: float = 0.12
    seed: int = 0
    name: str = "tiny"


@dataclass
class TinyRun:
    """The interface of ``fedmist.load_run``'s result."""

    model: torch.nn.Module
    dataset: Dataset
    split: dict[str, np.ndarray]
    config: TinyConfig
    path: Path


def train_mlp(cfg: TinyConfig, ds: Dataset, rows: np.ndarray, seed: int) -> MLP:
    """Full-batch SGD with momentum, no regularisation: memorises a small training set."""
    torch.manual_seed(seed)
    model = MLP(cfg.n_features, cfg.num_classes, hidden=(cfg.hidden,))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    x = torch.as_tensor(ds.x[rows], dtype=torch.float32)
    y = torch.as_tensor(ds.y[rows])
    model.train()
    for _ in range(cfg.epochs):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def load_tiny_run(path: Path) -> TinyRun:
    """Rebuild a run from its directory alone, as ``fedmist.load_run`` does."""
    cfg = TinyConfig(**json.loads((path / "config.json").read_text()))
    ds = make_synthetic(cfg.n_rows, cfg.n_features, cfg.num_classes, seed=cfg.seed, density=cfg.density)
    model = MLP(cfg.n_features, cfg.num_classes, hidden=(cfg.hidden,))
    model.load_state_dict(torch.load(path / "model.pt", weights_only=True))
    with np.load(path / "split.npz") as z:
        split = {k: z[k] for k in ("members", "nonmembers", "test")}
    return TinyRun(model.eval(), ds, split, cfg, path)


def make_run_dir(path: Path, cfg: TinyConfig, train_on: str = "members") -> TinyRun:
    """Train a target on the split's members (``train_on="members"``), or on the test rows only
    (``"test"``: members and non-members are then both unseen, i.e. exchangeable)."""
    path.mkdir(parents=True, exist_ok=True)
    ds = make_synthetic(cfg.n_rows, cfg.n_features, cfg.num_classes, seed=cfg.seed, density=cfg.density)
    split = make_split(cfg.n_rows, cfg.train_size, seed=cfg.seed)
    rows = split.members if train_on == "members" else split.test
    model = train_mlp(cfg, ds, rows, seed=cfg.seed)
    (path / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    torch.save(model.state_dict(), path / "model.pt")
    np.savez(path / "split.npz", members=split.members, nonmembers=split.nonmembers, test=split.test)
    return load_tiny_run(path)


class ShadowTrainer:
    """``train_fn_factory`` for the audit: trains shadows with the run's recipe; counts calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, run: TinyRun, seed: int):
        def train_fn(i: int, member_rows: np.ndarray) -> dict[str, torch.Tensor]:
            self.calls.append(i)
            return train_mlp(run.config, run.dataset, member_rows, seed=1000 * (seed + 1) + i).state_dict()
        return train_fn


@contextlib.contextmanager
def one_thread():
    """One torch/BLAS thread: on a shared 2-core machine two threads made tiny models ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def memorizing_run(tmp_path_factory) -> TinyRun:
    """400 rows, 20 classes: 200 members fitted to zero loss, test accuracy ~65 %."""
    with one_thread():
        return make_run_dir(tmp_path_factory.mktemp("memorizing"), TinyConfig())


@pytest.fixture(scope="session")
def exchangeable_run(tmp_path_factory) -> TinyRun:
    """The target never saw its members or non-members: no attack can tell them apart."""
    with one_thread():
        return make_run_dir(tmp_path_factory.mktemp("exchangeable"), TinyConfig(n_rows=600), train_on="test")


@pytest.fixture(scope="session")
def kit():
    """The helpers above, for tests (importing ``conftest`` by name is ambiguous across directories)."""
    import types
    return types.SimpleNamespace(TinyConfig=TinyConfig, TinyRun=TinyRun, train_mlp=train_mlp,
                                 make_run_dir=make_run_dir, load_tiny_run=load_tiny_run, ShadowTrainer=ShadowTrainer,
                                 one_thread=one_thread)
