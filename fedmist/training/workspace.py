"""Per-process cache of the dataset as tensors and of a model skeleton.

Flower calls a ClientApp once per message; reloading and converting the dataset every time would
cost more than the training step, so each process keeps one ``Workspace`` per (data, model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedmist.config import RunConfig
from fedmist.data.dataset import Dataset
from fedmist.data.registry import DEFAULT_MODEL, base_name, load_dataset
from fedmist.models import build_model
from fedmist.training.jobs import State


@dataclass
class Workspace:
    dataset: Dataset
    x: torch.Tensor  # on device; uint8 features stay uint8 (Texas as float32 would be 1.6 GB)
    y: torch.Tensor
    model: nn.Module  # reused skeleton: load_state_dict before every job
    model_name: str
    device: str


_WORKSPACES: dict[tuple, Workspace] = {}


def model_name_for(cfg: RunConfig) -> str:
    return cfg.model or DEFAULT_MODEL.get(base_name(cfg.dataset), "mlp")


def get_workspace(cfg: RunConfig) -> Workspace:
    name = model_name_for(cfg)
    key = (cfg.dataset, cfg.data_dir, cfg.dataset_seed if cfg.dataset.startswith("synthetic") else 0, name, cfg.device)
    ws = _WORKSPACES.get(key)
    if ws is None:
        ds = load_dataset(cfg.dataset, cfg.data_dir or None, seed=cfg.dataset_seed)
        x = torch.from_numpy(ds.x).to(cfg.device)
        y = torch.from_numpy(ds.y).to(cfg.device)
        model = build_model(name, ds.feature_shape, ds.num_classes).to(cfg.device)
        ws = Workspace(ds, x, y, model, name, cfg.device)
        _WORKSPACES[key] = ws
    return ws


def initial_model(cfg: RunConfig) -> nn.Module:
    """The seeded network every run starts from: same seed -> same initial weights, in any process."""
    ws = get_workspace(cfg)
    torch.manual_seed(cfg.seed)
    return build_model(ws.model_name, ws.dataset.feature_shape, ws.dataset.num_classes)


def initial_weights(cfg: RunConfig) -> State:
    """θ̄_0 as a CPU state dict (``initial_model``'s weights)."""
    return {k: v.detach().cpu().clone() for k, v in initial_model(cfg).state_dict().items()}
