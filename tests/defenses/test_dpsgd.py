"""DP-SGD: the update Opacus makes against one computed by hand, the accounting, the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant

from fedmist.config import RunConfig
from fedmist.defenses import DEFENSES
from fedmist.defenses.dpsgd import DPSGDParams, dpsgd_step, epsilon_spent, poisson_schedule
from fedmist.runs.inprocess import InProcessFederation
from fedmist.errors import ConfigError
from fedmist.models import build_model
from fedmist.runs.rundir import open_run, prepare_config, train_run
from fedmist.training.steps import StepContext


def _context(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, params: DPSGDParams, *, lr: float = 0.5,
             batch_size: int | None = None, seed: int = 0) -> StepContext:
    return StepContext(model, x, y, np.arange(len(x)), lr=lr, batch_size=batch_size or len(x), momentum=0.0,
                       weight_decay=0.0, mixup_alpha=0.0, rng=np.random.default_rng(seed), device="cpu", epoch=1,
                       epochs=1, params=params, num_classes=3)


def _clipped_mean_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                           clip: float) -> tuple[list[torch.Tensor], list[float]]:
    """Mean over examples of each example's gradient scaled to norm <= clip, one example at a
    time; and the examples' gradient norms."""
    total = [torch.zeros_like(p) for p in model.parameters()]
    norms = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        norms.append(float(norm))
        total = [t + min(1.0, clip / float(norm)) * g for t, g in zip(total, grads)]
    return [t / len(x) for t in total], norms


@pytest.mark.parametrize("clipping", ["ghost", "per_sample"])
def test_noise_free_update_is_lr_times_the_mean_of_clipped_per_example_gradients(clipping: str) -> None:
    torch.manual_seed(0)
    model = build_model("mlp-small", (5,), 3)
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    before = [p.detach().clone() for p in model.parameters()]
    clip, lr = 2.5, 0.5
    expected_grad, norms = _clipped_mean_gradient(model, x, y, clip)
    assert min(norms) < clip < max(norms)  # some examples are clipped, some not
    # Batch size = n: sample rate 1, so the one Poisson batch holds every example.
    dpsgd_step(_context(model, x, y, DPSGDParams(noise_multiplier=0.0, max_grad_norm=clip, clipping=clipping), lr=lr))
    for b, g, p in zip(before, expected_grad, model.parameters()):
        torch.testing.assert_close(p.detach(), b - lr * g, rtol=0, atol=2e-6)
    # The module is left clean for the next job: no Opacus hooks or attributes.
    model.zero_grad()
    F.cross_entropy(model(x[:1]), y[:1]).backward()
    assert not any(hasattr(p, "grad_sample") or hasattr(p, "_forward_counter") for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_noisy_steps_are_seeded_and_noise_changes_the_update() -> None:
    x, y = torch.randn(40, 5, generator=torch.Generator().manual_seed(1)), torch.arange(40) % 3

    def trained(noise: float, seed: int) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("mlp-small", (5,), 3)
        dpsgd_step(_context(model, x, y, DPSGDParams(noise_multiplier=noise), batch_size=10, seed=seed))
        return [p.detach().clone() for p in model.parameters()]

    a, b, quiet = trained(1.0, 3), trained(1.0, 3), trained(0.0, 3)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.allclose(u, v) for u, v in zip(a, quiet))


def test_ghost_clipping_takes_the_same_noisy_steps_as_per_sample_gradients() -> None:
    """Ghost clipping only computes the clipped sum differently: same batches, same noise draws,
    same weights after an epoch of several Poisson steps with momentum."""
    x, y = torch.randn(60, 5, generator=torch.Generator().manual_seed(2)), torch.arange(60) % 3

    def trained(clipping: str) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("mlp-small", (5,), 3)
        ctx = _context(model, x, y, DPSGDParams(noise_multiplier=0.7, max_grad_norm=0.5, clipping=clipping),
                       lr=0.3, batch_size=12, seed=5)
        ctx.momentum = 0.9
        dpsgd_step(ctx)
        return [p.detach().clone() for p in model.parameters()]

    torch.manual_seed(0)
    initial = [p.detach().clone() for p in build_model("mlp-small", (5,), 3).parameters()]
    ghost, per_sample = trained("ghost"), trained("per_sample")
    assert all((g - w).abs().max() > 1e-3 for g, w in zip(ghost, initial))  # it trained
    for g, q in zip(ghost, per_sample):
        torch.testing.assert_close(g, q, rtol=0, atol=1e-5)


def test_poisson_schedule() -> None:
    assert poisson_schedule(4000, 100) == (0.025, 40)
    assert poisson_schedule(108, 20) == (20 / 108, 5)
    assert poisson_schedule(10, 100) == (1.0, 1)


def test_epsilon_is_opacus_rdp_accountant_and_shrinks_as_noise_grows() -> None:
    q, steps, delta = 0.025, 400, 1e-5
    eps = []
    for sigma in (0.8, 1.1, 2.0):
        acc = RDPAccountant()
        for _ in range(steps):
            acc.step(noise_multiplier=sigma, sample_rate=q)
        reference = acc.get_epsilon(delta)
        assert epsilon_spent(sigma, q, steps, delta) == pytest.approx(reference, rel=1e-12)
        eps.append(reference)
    assert eps[0] > eps[1] > eps[2] > 0
    assert epsilon_spent(0.0, q, steps, delta) == float("inf")


@pytest.mark.parametrize("model", ["resnet18", "densenet_bc"])
def test_batchnorm_models_are_refused_at_config_validation(model: str) -> None:
    cfg = RunConfig(dataset="synthetic:240x12x3", model=model, defense="dpsgd", epochs=1)
    with pytest.raises(ConfigError, match=rf"dpsgd.*{model}.*BatchNorm2d"):
        prepare_config(cfg)


@pytest.mark.parametrize("params, message", [
    ({"noise_multiplier": -1}, "noise_multiplier"),
    ({"max_grad_norm": 0}, "max_grad_norm"),
    ({"delta": 1.5}, "delta"),
    ({"target_epsilon": -2}, "target_epsilon"),
    ({"sigma": 1.0}, "no parameter 'sigma'"),
])
def test_bad_params_are_config_errors(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DEFENSES["dpsgd"].parse_params(params)


def _tiny(**params) -> RunConfig:
    return prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="dpsgd", clients=3,
                                    epochs=2, lr=0.1, batch_size=20, train_size=120, seed=7, params=params))


def test_in_process_run_trains_one_client_and_reports_the_runs_epsilon() -> None:
    cfg = _tiny(noise_multiplier=1.1, max_grad_norm=1.0)
    assert cfg.clients == 1
    run = open_run(cfg, None)
    start = {k: v.clone() for k, v in run.state.items()}
    train_run(run, InProcessFederation())
    report = DEFENSES["dpsgd"].after_training(run)
    q, per_epoch = poisson_schedule(120, 20)
    assert (report["sample_rate"], report["steps"], report["noise_multiplier"]) == (q, 2 * per_epoch, 1.1)
    assert report["epsilon"] == pytest.approx(epsilon_spent(1.1, q, 2 * per_epoch, 1e-5))
    assert any(not torch.equal(start[k], run.state[k]) for k in start)
    # The same seed gives the same weights.
    again = open_run(cfg, None)
    train_run(again, InProcessFederation())
    assert all(torch.equal(run.state[k], again.state[k]) for k in run.state)


def test_target_epsilon_calibrates_the_noise() -> None:
    cfg = _tiny(target_epsilon=4.0)
    run = open_run(cfg, None)
    report = DEFENSES["dpsgd"].after_training(run)
    assert 3.9 <= report["epsilon"] <= 4.0
    assert report["noise_multiplier"] > 0


def test_flower_simulation_writes_epsilon_to_metrics(tmp_path: Path) -> None:
    out = tmp_path / "dp"
    proc = subprocess.run([sys.executable, "-m", "fedmist", "simulate", "--dataset", "synthetic:240x12x3",
                           "--model", "mlp-small", "--defense", "dpsgd", "--epochs", "2", "--batch-size", "20",
                           "--train-size", "120", "--seed", "7", "--set", "params.noise_multiplier=1.1",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    q, per_epoch = poisson_schedule(120, 20)
    assert summary["defense"]["epsilon"] == pytest.approx(epsilon_spent(1.1, q, 2 * per_epoch, 1e-5))
    # Flower's clients compute what the in-process engine computes.
    run = open_run(_tiny(noise_multiplier=1.1), None)
    train_run(run, InProcessFederation())
    saved = torch.load(out / "model.pt", weights_only=True)
    for k, v in saved.items():
        torch.testing.assert_close(v, run.state[k], rtol=0, atol=1e-6)
