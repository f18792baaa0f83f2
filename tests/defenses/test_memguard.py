"""MemGuard: released vectors keep the label, fool the defender's classifier, respect the budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fedmist
from fedmist.config import RunConfig
from fedmist.defenses import DEFENSES
from fedmist.defenses.memguard import (MemGuardModel, MemGuardParams, MembershipNet, query_coins,
                                       release_probability)
from fedmist.runs.inprocess import InProcessFederation
from fedmist.training.workspace import get_workspace
from fedmist.errors import ConfigError
from fedmist.runs.rundir import Run, open_run, prepare_config, train_run

# Smaller than the paper's search so the tests stay fast; the algorithm is the same.
FAST = {"defender_epochs": 60, "max_iter": 80, "c3_max": 10.0}


def _cfg(**params) -> RunConfig:
    return prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="memguard", clients=3,
                                    epochs=4, lr=0.1, batch_size=20, train_size=120, seed=7,
                                    params={**FAST, **params}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Run:
    run = open_run(_cfg(), tmp_path_factory.mktemp("mg") / "run")
    train_run(run, InProcessFederation())
    return run


def _queries(run: Run) -> torch.Tensor:
    ws = get_workspace(run.cfg)
    rows = np.r_[run.split.members[:60], run.split.nonmembers[:60]]
    return ws.x[torch.from_numpy(rows)].float()


def test_training_is_one_client_with_a_reference_set_and_stores_the_defender(trained: Run) -> None:
    assert trained.cfg.clients == 1
    assert len(trained.split.reference) == 12 and not set(trained.split.reference) & set(trained.split.members)
    assert any(k.startswith("aux/memguard/") for k in trained.state)
    assert trained.path is not None and (trained.path / "defense.pt").is_file()
    report = json.loads((trained.path / "metrics.json").read_text())["summary"]["defense"]
    assert report["defender_members"] == report["defender_nonmembers"] == 12
    assert 0.5 <= report["defender_train_acc"] <= 1.0
    assert report["l1_budget"] == 1.0 and "epsilon" not in report  # not a DP epsilon


def test_released_vectors_keep_the_label_and_are_probabilities(trained: Run) -> None:
    model = fedmist.load_run(trained.path).model
    assert isinstance(model, MemGuardModel) and not model.training
    x = _queries(trained)
    with torch.no_grad():
        out = model(x)
        clean = model.model(x)
    probs = out.exp()
    assert torch.all(probs >= 0) and torch.allclose(probs.sum(1), torch.ones(len(x)), atol=1e-5)
    assert torch.equal(probs.argmax(1), clean.argmax(1))
    assert not torch.allclose(probs, torch.softmax(clean, 1))  # something was perturbed
    # Deterministic, and the same answer whatever the batch.
    with torch.no_grad():
        assert torch.equal(model(x), out)
        torch.testing.assert_close(model(x[:7]), out[:7], rtol=0, atol=1e-5)


def test_phase1_moves_the_defender_towards_one_half(trained: Run) -> None:
    model = fedmist.load_run(trained.path).model
    x = _queries(trained)
    with torch.no_grad():
        clean = model.model(x)
        guarded = model.guard(clean, torch.zeros(len(x)))
        before = (torch.sigmoid(model.g(torch.softmax(clean, 1))) - 0.5).abs()
        after = (torch.sigmoid(model.g(torch.softmax(guarded.noisy, 1))) - 0.5).abs()
    assert float(after.mean()) < 0.5 * float(before.mean())
    assert torch.equal(guarded.noisy.argmax(1), clean.argmax(1))


def test_expected_distortion_stays_within_the_budget(trained: Run) -> None:
    budget = 0.05
    full = fedmist.load_run(trained.path).model
    small = MemGuardModel(full.model, full.g, MemGuardParams(**{**FAST, "epsilon": budget}))
    x = _queries(trained)
    with torch.no_grad():
        clean = small.model(x)
        guarded = small.guard(clean, query_coins(x))
    distortion = (torch.softmax(guarded.noisy, 1) - torch.softmax(clean, 1)).abs().sum(1)
    expected = guarded.p_release * distortion
    assert torch.all(expected <= budget + 1e-6)
    assert torch.any(distortion > budget)  # the budget binds here: Phase II does the limiting
    assert torch.all(guarded.released <= (guarded.p_release > 0))


def test_release_probability_by_hand() -> None:
    torch.manual_seed(0)
    g = MembershipNet(3).requires_grad_(False)
    clean = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    noisy = torch.tensor([[1.0, 0.5, -1.0], [0.0, 1.0, 0.0]])
    got = release_probability(clean, noisy, g, epsilon=0.1)
    s, s2 = torch.softmax(clean, 1), torch.softmax(noisy, 1)
    d = float((s2[0] - s[0]).abs().sum())
    closer = abs(float(torch.sigmoid(g(s2[:1]))) - 0.5) < abs(float(torch.sigmoid(g(s[:1]))) - 0.5)
    assert float(got[0]) == pytest.approx(min(0.1 / d, 1.0) if closer else 0.0)
    assert float(got[1]) == 0.0  # no noise, nothing to release


def test_a_shadow_state_gives_a_wrapped_model(trained: Run) -> None:
    loaded = fedmist.load_run(trained.path)
    state = torch.load(trained.path / "model.pt", weights_only=True)
    state.update(torch.load(trained.path / "defense.pt", weights_only=True))
    model = loaded.model_from_state(state)
    assert isinstance(model, MemGuardModel)
    x = _queries(trained)[:10]
    with torch.no_grad():
        torch.testing.assert_close(model(x), loaded.model(x))


def test_a_reference_set_is_required() -> None:
    with pytest.raises(ConfigError, match="reference"):
        prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="memguard",
                                 train_size=120, reference_size=0))
    with pytest.raises(ConfigError, match="epsilon"):
        DEFENSES["memguard"].parse_params({"epsilon": -1})


def test_flower_simulation_saves_the_defender(tmp_path: Path) -> None:
    out = tmp_path / "mg"
    proc = subprocess.run([sys.executable, "-m", "fedmist", "simulate", "--dataset", "synthetic:240x12x3",
                           "--model", "mlp-small", "--defense", "memguard", "--epochs", "2", "--batch-size", "20",
                           "--train-size", "120", "--seed", "7", "--set", "params.defender_epochs=20",
                           "--set", "params.max_iter=40", "--set", "params.c3_max=1",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "defense.pt").is_file()
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["defense"]["defender_nonmembers"] == 12
    run = fedmist.load_run(out)
    assert isinstance(run.model, MemGuardModel)
    x = get_workspace(run.config).x[torch.from_numpy(run.split["members"][:5])].float()
    with torch.no_grad():
        assert torch.equal(run.model(x).argmax(1), run.model.model(x).argmax(1))
