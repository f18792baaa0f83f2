"""``load_run``: a finished run directory back as Python objects."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedmist.config import RunConfig
from fedmist.data.dataset import Dataset
from fedmist.data.registry import load_dataset
from fedmist.data.split import Split
from fedmist.defenses import get_defense
from fedmist.models import build_model
from fedmist.training.jobs import model_part
from fedmist.training.workspace import model_name_for
from fedmist.errors import RunDirError


@dataclass
class LoadedRun:
    """A trained run: ``model`` (eval mode), ``dataset``, ``split`` index arrays, ``config``."""

    path: Path
    config: RunConfig
    model: nn.Module
    dataset: Dataset
    split: dict[str, np.ndarray]
    metrics: dict

    def model_from_state(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """The queryable model for a full training state of this recipe (a shadow's, say): the
        network with the weights, wrapped by the defense's output modification if it has one."""
        return query_model(self.config, state, self.dataset)


def load_run(path: str | Path, device: str = "cpu") -> LoadedRun:
    """Load ``runs/NAME``: rebuilds the model from ``config.json`` and ``model.pt``.

    >>> load_run("runs/does-not-exist")
    Traceback (most recent call last):
    ...
    fedmist.errors.RunDirError: runs/does-not-exist is not a run directory (no config.json)
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise RunDirError(f"{path} is not a run directory (no config.json)")
    for required in ("model.pt", "split.npz"):
        if not (path / required).is_file():
            raise RunDirError(f"run {path} is incomplete: {required} is missing (unfinished run? use --resume)")
    cfg = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
    dataset = load_dataset(cfg.dataset, cfg.data_dir or None, seed=cfg.dataset_seed)
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    if (path / "defense.pt").is_file():
        state.update(torch.load(path / "defense.pt", map_location="cpu", weights_only=True))
    model = query_model(cfg, state, dataset).to(device).eval()
    split = Split.load(path / "split.npz")
    metrics_file = path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return LoadedRun(path, cfg, model, dataset,
                     {"members": split.members, "nonmembers": split.nonmembers, "test": split.test,
                      "reference": split.reference}, metrics)


def query_model(cfg: RunConfig, state: dict[str, torch.Tensor], dataset: Dataset) -> nn.Module:
    """Network + weights (``aux/`` tensors stripped), wrapped by the defense's ``query_model`` hook
    (MemGuard's output perturbation) so attacks see what a user of the deployed model sees."""
    model = build_model(model_name_for(cfg), dataset.feature_shape, dataset.num_classes)
    model.load_state_dict(model_part(state))
    model.eval()
    spec = get_defense(cfg.defense)
    return spec.query_model(model, state, cfg).eval() if spec.query_model is not None else model
