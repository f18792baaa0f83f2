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
from fedmist.defenses import advreg as ar
from fedmist.defenses.advreg import (
    PREFIX,
    AdvRegParams,
    InferenceModel,
    advreg_step,
    inference_gain,
    init_attack,
    member_log_h,
)
from fedmist.defenses.registry import aux_part, get_defense, model_part
from fedmist.errors import ConfigError
from fedmist.flower.simulation import train_runs
from fedmist.models import build_model
from fedmist.runs.rundir import open_run, prepare_config
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


# --- the settings of HAMP's artefact: k inner attack batches, logits, Adam, the MSE objective ---


RECIPES = Path(__file__).resolve().parents[2] / "fedmist" / "recipes"


def test_k_inner_attack_batches_of_attack_batch_size_per_classifier_batch(
        tiny_cfg: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    real = ar.attack_loss

    def counting(h, members, reference, objective):
        seen.append((len(members[0]), len(reference[0])))
        return real(h, members, reference, objective)

    monkeypatch.setattr(ar, "attack_loss", counting)
    ctx = _ctx(tiny_cfg, AdvRegParams(k=3, attack_batch_size=7))
    advreg_step(ctx)  # 40 members, batches of 10: 4 classifier batches
    assert len(seen) == 4 * 3 and set(seen) == {(7, 7)}
    seen.clear()
    advreg_step(_ctx(tiny_cfg, AdvRegParams(k=2)))  # attack batches as large as the classifier's
    assert len(seen) == 4 * 2 and set(seen) == {(10, 10)}


def test_h_reads_logits_or_softmax() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    assert torch.equal(ar.attack_view(logits, AdvRegParams(attack_input="logits")), logits)
    torch.testing.assert_close(ar.attack_view(logits, AdvRegParams()), torch.softmax(logits, 1))


def test_mse_objective_against_hand_values() -> None:
    onehot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    members = (torch.tensor([[0.9, 0.1], [0.2, 0.8]]), onehot)  # z = 0.8, 0.6
    reference = (torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, 1.0]]))  # z = 0
    def s(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    expected = ((s(0.8) - 1) ** 2 + (s(0.6) - 1) ** 2 + s(0.0) ** 2) / 3
    assert float(ar.attack_loss(_linear_h, members, reference, "mse")) == pytest.approx(expected, abs=1e-6)
    assert float(ar.attack_loss(_linear_h, members, reference, "log")) == pytest.approx(
        -float(inference_gain(_linear_h, members, reference)), abs=1e-6)
    assert float(ar.classifier_penalty(_linear_h, *members, "mse")) == pytest.approx((s(0.8) + s(0.6)) / 2, abs=1e-6)
    assert float(ar.classifier_penalty(_linear_h, *members, "log")) == pytest.approx(
        float(member_log_h(_linear_h, *members)), abs=1e-6)


def test_adam_for_h_when_asked() -> None:
    h = InferenceModel(3)
    assert isinstance(ar.make_attack_optimizer(h, AdvRegParams(attack_optimizer="adam", attack_lr=1e-4), 0.9),
                      torch.optim.Adam)
    assert isinstance(ar.make_attack_optimizer(h, AdvRegParams(), 0.9), torch.optim.SGD)


def test_an_epoch_with_the_artefact_options_trains_h_and_regularises(tiny_cfg: RunConfig) -> None:
    options = {"k": 3, "attack_batch_size": 5, "attack_input": "logits", "attack_optimizer": "adam",
               "attack_lr": 1e-3, "objective": "mse"}
    ctx = _ctx(tiny_cfg, AdvRegParams(alpha=10.0, **options))
    before = {k: v.clone() for k, v in ctx.aux.items()}
    assert np.isfinite(advreg_step(ctx))
    assert any(not torch.equal(ctx.aux[k], before[k]) for k in before)
    plain = _ctx(tiny_cfg, AdvRegParams(alpha=0.0, **options))
    advreg_step(plain)
    assert any(not torch.allclose(a, b) for a, b in zip(ctx.model.state_dict().values(),
                                                         plain.model.state_dict().values()))


def test_bad_artefact_options_are_config_errors() -> None:
    spec = get_defense("advreg")
    for key, value in (("attack_input", "probs"), ("attack_optimizer", "rmsprop"), ("objective", "bce"),
                       ("attack_batch_size", -1), ("classifier_optimizer", "lbfgs")):
        with pytest.raises(ConfigError, match=key):
            spec.parse_params({key: value})


def test_artefact_preset_loads_and_is_accepted() -> None:
    cfg = prepare_config(RunConfig.from_toml(RECIPES / "location-advreg-artefact.toml"))
    p = get_defense("advreg").parse_params(cfg.params)
    assert (cfg.defense, cfg.epochs, cfg.batch_size, cfg.reference_size) == ("advreg", 50, 64, 2000)
    assert p == AdvRegParams(alpha=10.0, k=15, attack_lr=1e-4, attack_batch_size=32, attack_input="logits",
                             attack_optimizer="adam", objective="mse", classifier_optimizer="adam")
    assert (cfg.lr, cfg.lr_schedule) == (0.001, [25, 25])


def test_adam_for_the_classifier_when_asked(tiny_cfg: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []
    real = ar.adam_pass
    monkeypatch.setattr(ar, "adam_pass", lambda ctx, loss: used.append("adam") or real(ctx, loss))
    sgd, adam = _ctx(tiny_cfg, AdvRegParams(k=1)), _ctx(tiny_cfg, AdvRegParams(k=1, classifier_optimizer="adam"))
    advreg_step(sgd)
    assert used == []
    assert np.isfinite(advreg_step(adam)) and used == ["adam"]
    assert any(not torch.allclose(a, b) for a, b in zip(sgd.model.state_dict().values(),
                                                         adam.model.state_dict().values()))
