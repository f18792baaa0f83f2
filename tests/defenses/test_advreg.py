"""AdvReg: the gain against hand values, h's weights in the state, in-process and Flower runs."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmist.config import RunConfig
from fedmist.defenses.advreg import (PREFIX, AdvRegParams, InferenceModel, advreg_step, inference_gain,
                                     init_attack, member_log_h)
from fedmist.defenses.registry import aux_part, model_part
from fedmist.models import build_model
from fedmist.runs.rundir import open_run, prepare_config
from fedmist.flower.simulation import train_runs
from fedmist.training.steps import StepContext


def _linear_h(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """A fixed h: logit = 2·(true-class probability) − 1."""
    return 2 * (probs * onehot).sum(1) - 1


def _log_sigmoid(z: float) -> float:
    return -math.log1p(math.exp(-z))


def test_gain_against_hand_values_for_a_fixed_h() -> None:
    onehot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    members = (torch.tensor([[0.9, 0.1], [0.2, 0.8]]), onehot)  # true-class p: 0.9, 0.8 -> z = 0.8, 0.6
    reference = (torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, 1.0]]))  # p = 0.5 -> z = 0
    log_h_members = (_log_sigmoid(0.8) + _log_sigmoid(0.6)) / 2
    assert float(member_log_h(_linear_h, *members)) == pytest.approx(log_h_members, abs=1e-6)
    expected = 0.5 * log_h_members + 0.5 * _log_sigmoid(-0.0)  # log(1 − h) = log σ(−z)
    assert float(inference_gain(_linear_h, members, reference)) == pytest.approx(expected, abs=1e-6)


def test_h_takes_the_prediction_and_the_label() -> None:
    h = InferenceModel(5)
    probs, onehot = torch.softmax(torch.randn(4, 5), 1), torch.eye(5)[:4]
    assert h(probs, onehot).shape == (4,)
    assert not torch.allclose(h(probs, onehot), h(probs, torch.eye(5)[1:5]))


def _ctx(tiny_cfg: RunConfig, params: AdvRegParams) -> StepContext:
    g = np.random.default_rng(3)
    x = torch.from_numpy(g.normal(size=(80, 6)).astype(np.float32))
    y = torch.from_numpy(g.integers(0, 3, 80))
    torch.manual_seed(0)
    model = build_model("mlp-small", (6,), 3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        aux = {PREFIX + k: v.clone() for k, v in InferenceModel(3).state_dict().items()}
    return StepContext(model, x, y, np.arange(40), lr=0.1, batch_size=10, momentum=0.9, weight_decay=0.0,
                       mixup_alpha=0.0, rng=np.random.default_rng(5), device="cpu", epoch=1, epochs=1,
                       params=params, num_classes=3, reference=np.arange(40, 80), aux=aux)


def test_an_epoch_trains_h_and_returns_its_weights_in_aux(tiny_cfg: RunConfig) -> None:
    ctx = _ctx(tiny_cfg, AdvRegParams(alpha=1.0, k=2))
    before = {k: v.clone() for k, v in ctx.aux.items()}
    loss = advreg_step(ctx)
    assert np.isfinite(loss)
    assert sorted(ctx.aux) == sorted(before)
    assert any(not torch.equal(ctx.aux[k], before[k]) for k in before)
    # The regulariser changes the classifier's update.
    plain = _ctx(tiny_cfg, AdvRegParams(alpha=0.0, k=2))
    advreg_step(plain)
    assert any(not torch.allclose(a, b) for a, b in zip(ctx.model.state_dict().values(),
                                                         plain.model.state_dict().values()))


def test_initial_h_is_seeded_and_kept_under_aux_keys(tiny_cfg: RunConfig) -> None:
    cfg = prepare_config(dataclasses.replace(tiny_cfg, defense="advreg"))
    a, b = init_attack(cfg, AdvRegParams(), None), init_attack(cfg, AdvRegParams(), None)
    assert a and all(k.startswith(PREFIX) for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_end_to_end_in_process_carries_h_in_the_state(tiny_cfg: RunConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, defense="advreg")
    run = open_run(prepare_config(cfg), None)
    assert run.cfg.clients == 1 and len(run.split.reference) == 24
    start = {k: v.clone() for k, v in aux_part(run.state).items()}
    train_runs([run], 1, "inprocess")
    end = aux_part(run.state)
    assert sorted(end) == sorted(start) and any(not torch.equal(end[k], start[k]) for k in start)
    assert all(np.isfinite(h["local_loss"]) for h in run.history)


def test_flower_simulation_round_trips_h_and_writes_defense_pt(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "fedmist", "simulate", "--dataset", "synthetic:240x12x3",
                           "--model", "mlp-small", "--defense", "advreg", "--epochs", "2", "--batch-size", "20",
                           "--train-size", "120", "--seed", "7", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    aux = torch.load(out / "defense.pt", weights_only=True)
    model = torch.load(out / "model.pt", weights_only=True)
    assert aux and all(k.startswith(PREFIX) for k in aux) and not aux_part(model)
    assert sorted(model_part(model)) == sorted(build_model("mlp-small", (12,), 3).state_dict())
    # h trained through the Flower messages: it is no longer its seeded initial value ...
    cfg = RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    initial = init_attack(cfg, AdvRegParams(), None)
    assert any(not torch.equal(aux[k], initial[k]) for k in initial)
    # ... and equals what the same run computes in this process.
    run = open_run(cfg, None)
    train_runs([run], 1, "inprocess")
    for k, v in aux_part(run.state).items():
        torch.testing.assert_close(aux[k], v, rtol=0, atol=1e-6)
