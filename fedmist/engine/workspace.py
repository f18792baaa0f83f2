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


def initial_state(cfg: RunConfig) -> dict[str, torch.Tensor]:
    """The seeded θ̄_0 every run starts from (same seed -> same initial weights), plus the defense's
    own initial tensors (``aux/`` keys, e.g. AdvReg's attack model)."""
    from fedmist.defenses import DEFENSES

    ws = get_workspace(cfg)
    torch.manual_seed(cfg.seed)
    fresh = build_model(ws.model_name, ws.dataset.feature_shape, ws.dataset.num_classes)
    state = {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}
    spec = DEFENSES[cfg.defense]
    if spec.init_aux is not None:
        aux = spec.init_aux(cfg, spec.parse_params(cfg.params), fresh)
        bad = [k for k in aux if not k.startswith("aux/")]
        if bad:
            raise ValueError(f"defense {cfg.defense!r}: init_aux keys must start with 'aux/', got {bad}")
        state.update({k: v.detach().cpu().clone() for k, v in aux.items()})
    return state
