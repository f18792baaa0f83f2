"""Best-validation model selection for any defense (``RunConfig.best_validation``): the released
model is the epoch with the best accuracy on the reference rows, and configs where that cannot
mean anything are refused before training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedmist.config import RunConfig
from fedmist.errors import ConfigError
from fedmist.flower.simulation import train_runs
from fedmist.runs.load import load_run
from fedmist.runs.rundir import open_run, prepare_config


@pytest.mark.parametrize("defense", ["sgd", "mist"])
def test_the_released_model_is_the_best_reference_epoch(tiny_cfg: RunConfig, tmp_path, defense: str) -> None:
    cfg = dataclasses.replace(tiny_cfg, defense=defense, clients=1 if defense == "sgd" else 3, epochs=5, lr=0.5,
                              reference_size=30, best_validation=True)
    run = open_run(prepare_config(cfg), tmp_path / "run")
    train_runs([run], cfg.clients, "inprocess")
    vals = [h["val_acc"] for h in run.history]
    assert len(vals) == 5
    best = run.history[-1]["best_epoch"]
    assert vals.index(max(vals)) == best - 1  # the first of equals, as the artefact's strict ">"
    if defense == "sgd":  # lr 0.5 overshoots here: epoch 2 is best, so "released = last" would fail below
        assert best < 5
    loaded = load_run(tmp_path / "run")
    x = torch.from_numpy(loaded.dataset.x[run.split.reference]).float()
    y = torch.from_numpy(loaded.dataset.y[run.split.reference])
    acc = float((loaded.model(x).argmax(1) == y).float().mean())
    assert acc == pytest.approx(max(vals), abs=1e-6)
    # the reference rows are out of training and out of the audit's members and non-members
    assert not set(run.split.reference) & set(run.split.members)
    assert not set(run.split.reference) & set(run.split.test)


def test_without_it_the_last_epoch_is_released(tiny_cfg: RunConfig, tmp_path) -> None:
    cfg = dataclasses.replace(tiny_cfg, defense="sgd", clients=1, epochs=3, reference_size=30)
    run = open_run(prepare_config(cfg), tmp_path / "run")
    train_runs([run], 1, "inprocess")
    assert "val_acc" not in run.history[-1] and "best_epoch" not in run.history[-1]


@pytest.mark.parametrize("change, error", [
    ({"defense": "sgd", "clients": 1}, "reference_size > 0"),
    ({"defense": "dmp", "clients": 1, "reference_size": 30}, "its own procedure"),
])
def test_refused_where_it_cannot_mean_anything(tiny_cfg: RunConfig, change: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        prepare_config(dataclasses.replace(tiny_cfg, best_validation=True, **change))


def test_cosine_learning_rate_follows_the_artefacts_formula_and_combines_with_steps(tiny_cfg: RunConfig) -> None:
    import math

    from fedmist.training.jobs import lr_at

    cfg = dataclasses.replace(tiny_cfg, lr=0.2, epochs=4, lr_cosine=True)
    # HAMP's artefact: lr * 0.5 * (1 + cos(pi * e / (E + 1))) for its epochs e = 0..E-1
    assert [lr_at(cfg, e + 1) for e in range(4)] == pytest.approx([0.2 * 0.5 * (1 + math.cos(math.pi * e / 5))
                                                                  for e in range(4)])
    stepped = dataclasses.replace(cfg, lr_schedule=[2])
    assert lr_at(stepped, 3) == pytest.approx(0.1 * lr_at(cfg, 3))
    assert lr_at(dataclasses.replace(cfg, lr_cosine=False), 4) == 0.2
