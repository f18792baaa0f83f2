"""Mixup + MMD: the MMD estimate against closed forms, the step against plain mixup, one run."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmist.config import RunConfig
from fedmist.defenses import DEFENSES
from fedmist.defenses import mixup_mmd as mm
from fedmist.defenses.mixup_mmd import (
    MixupMmdParams,
    ValidationByClass,
    class_mmd,
    mmd,
    mmd_step,
)
from fedmist.errors import ConfigError
from fedmist.flower.simulation import train_runs
from fedmist.models import build_model
from fedmist.runs.rundir import open_run, prepare_config
from fedmist.training.steps import StepContext, sgd_step


def test_mmd_matches_the_closed_form_on_three_points() -> None:
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0]])
    sigma = 2.0
    k = lambda sq: math.exp(-sq / (2 * sigma ** 2))  # noqa: E731
    # ||a0-a1||² = 1; ||a0-b||² = 1; ||a1-b||² = 2
    aa = (2 * k(0) + 2 * k(1)) / 4
    bb = k(0)
    ab = (k(1) + k(2)) / 2
    assert float(mmd(a, b, sigma)) == pytest.approx(aa + bb - 2 * ab, abs=1e-6)


def test_mmd_of_a_sample_with_itself_is_zero_and_grows_with_the_shift() -> None:
    a = torch.softmax(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    assert float(mmd(a, a)) == pytest.approx(0.0, abs=1e-7)
    assert 0 < float(mmd(a, a + 0.1)) < float(mmd(a, a + 0.5))


def test_class_mmd_is_the_count_weighted_mean_of_per_class_mmds() -> None:
    g = torch.Generator().manual_seed(1)
    members, valid = torch.rand(6, 3, generator=g), torch.rand(6, 3, generator=g)
    labels = torch.tensor([0, 1, 0, 2, 0, 1])
    expected = sum((labels == c).sum() / 6 * mmd(members[labels == c], valid[labels == c], 0.7) for c in range(3))
    assert float(class_mmd(members, valid, labels, 0.7)) == pytest.approx(float(expected), abs=1e-6)


def test_validation_rows_are_drawn_from_the_same_class() -> None:
    rows, labels = np.array([10, 11, 12, 13]), np.array([2, 0, 2, 0])
    by_class = ValidationByClass(rows, labels, num_classes=3)
    picked, has = by_class.draw(np.array([0, 1, 2, 2, 0]), np.random.default_rng(0))
    assert has.tolist() == [True, False, True, True, True]  # class 1 has no validation rows
    label_of = dict(zip(rows.tolist(), labels.tolist()))
    assert [label_of[r] for r in picked.tolist()] == [0, 2, 2, 0]


def _ctx(weight: float, seed: int = 0) -> StepContext:
    g = np.random.default_rng(3)
    x = torch.from_numpy(g.normal(size=(80, 6)).astype(np.float32))
    y = torch.from_numpy(g.integers(0, 3, 80))
    torch.manual_seed(seed)
    model = build_model("mlp-small", (6,), 3)
    return StepContext(model, x, y, np.arange(40), lr=0.1, batch_size=10, momentum=0.9, weight_decay=0.0,
                       mixup_alpha=1.0, rng=np.random.default_rng(5), device="cpu", epoch=1, epochs=1,
                       params=MixupMmdParams(mixup_alpha=1.0, mmd_weight=weight), num_classes=3,
                       reference=np.arange(40, 80))


def test_step_without_mmd_is_plain_mixup_and_with_mmd_differs() -> None:
    plain, zero, regularised = _ctx(0.0), _ctx(0.0), _ctx(2.0)
    sgd_step(plain)  # the sgd step with mixup_alpha = 1
    mmd_step(zero)
    mmd_step(regularised)
    for (name, p), z, r in zip(plain.model.state_dict().items(), zero.model.state_dict().values(),
                               regularised.model.state_dict().values()):
        torch.testing.assert_close(z, p, rtol=0, atol=0, msg=name)
    assert any(not torch.allclose(r, p) for p, r in zip(plain.model.state_dict().values(),
                                                         regularised.model.state_dict().values()))


def test_mixup_alpha_outside_params_is_refused(tiny_cfg: RunConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, defense="mixup_mmd", mixup_alpha=1.0)
    with pytest.raises(ConfigError, match="params.mixup_alpha"):
        prepare_config(cfg)
    with pytest.raises(ConfigError, match="sigma"):
        DEFENSES["mixup_mmd"].parse_params({"sigma": 0})


def test_end_to_end_in_process_holds_out_a_fifth_of_the_budget_as_validation(tiny_cfg: RunConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, defense="mixup_mmd", params={"mmd_weight": 1.0})
    run = open_run(prepare_config(cfg), None)
    assert run.cfg.clients == 1
    assert len(run.split.members) == 96 and len(run.split.reference) == 24
    assert not set(run.split.members) & set(run.split.reference)
    train_runs([run], 1, "inprocess")
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert all(np.isfinite(h["local_loss"]) for h in run.history)
    assert 0.0 <= run.summary()["test_acc"] <= 1.0


# --- the MIST code's schedule: a separate MMD pass, gated on the train/validation accuracy gap ---



RECIPES = Path(__file__).resolve().parents[2] / "fedmist" / "recipes"


def _separate_ctx(threshold: float, *, epoch: int = 1, epochs: int = 2, skip_last: bool = False) -> StepContext:
    ctx = _ctx(0.0)
    ctx.mixup_alpha = 0.0
    ctx.epoch, ctx.epochs = epoch, epochs
    ctx.params = MixupMmdParams(mixup_alpha=0.0, mmd_weight=6.5, separate=True, gap_threshold=threshold,
                                skip_last_epoch=skip_last, class_wise=False)
    return ctx


def _count_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = mm.mmd_pass

    def counting(ctx, valid):
        calls.append(1)
        return real(ctx, valid)

    monkeypatch.setattr(mm, "mmd_pass", counting)
    return calls


def test_no_mmd_pass_while_the_gap_is_below_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_passes(monkeypatch)
    gated, plain = _separate_ctx(threshold=1000.0), _separate_ctx(threshold=1000.0)
    mmd_step(gated)
    sgd_step(plain)  # the classifier pass alone: plain cross-entropy SGD
    assert calls == []
    for (name, p), g in zip(plain.model.state_dict().items(), gated.model.state_dict().values()):
        torch.testing.assert_close(g, p, rtol=0, atol=0, msg=name)


def test_one_mmd_pass_when_the_gap_exceeds_the_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_passes(monkeypatch)
    gated, plain = _separate_ctx(threshold=-1000.0), _separate_ctx(threshold=-1000.0)
    loss = mmd_step(gated)
    plain_loss = sgd_step(plain)
    assert calls == [1]
    assert loss == pytest.approx(plain_loss)  # the step reports the classifier pass's loss
    assert any(not torch.allclose(p, g) for p, g in zip(plain.model.state_dict().values(),
                                                        gated.model.state_dict().values()))


def test_no_mmd_pass_in_the_last_epoch_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_passes(monkeypatch)
    mmd_step(_separate_ctx(threshold=-1000.0, epoch=2, epochs=2, skip_last=True))
    assert calls == []
    mmd_step(_separate_ctx(threshold=-1000.0, epoch=1, epochs=2, skip_last=True))
    assert calls == [1]


def test_the_gap_is_measured_on_the_members_and_the_validation_rows_only(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _separate_ctx(threshold=3.0)
    asked: list[np.ndarray] = []
    accuracy = {0: 80.0, 1: 76.5}  # members, then validation rows: a 3.5-point gap

    def fake(c, rows):
        asked.append(rows)
        return accuracy[len(asked) - 1]

    monkeypatch.setattr(mm, "accuracy_points", fake)
    assert mm.mmd_gate_open(ctx, 3.0)
    assert np.array_equal(asked[0], ctx.rows) and np.array_equal(asked[1], ctx.reference)
    asked.clear()
    assert not mm.mmd_gate_open(ctx, 4.0)


def test_accuracy_points_by_hand() -> None:
    ctx = _ctx(0.0)
    with torch.no_grad():
        pred = ctx.model(ctx.x[:40]).argmax(1)
    assert mm.accuracy_points(ctx, np.arange(40)) == pytest.approx(100.0 * float((pred == ctx.y[:40]).float().mean()))


def test_whole_batch_mmd_when_not_class_wise() -> None:
    ctx = _separate_ctx(threshold=0.0)
    valid = ValidationByClass(ctx.reference, ctx.y[torch.from_numpy(ctx.reference)].numpy(), 3)
    xb, yb = ctx.x[:10], ctx.y[:10]
    ctx.rng = np.random.default_rng(1)
    got = mm._batch_mmd(ctx, valid, xb, yb, ctx.params)
    ctx.rng = np.random.default_rng(1)
    vrows, has = valid.draw(yb.numpy(), ctx.rng)
    with torch.no_grad():
        expected = mmd(torch.softmax(ctx.model(xb[torch.from_numpy(has)]), 1), torch.softmax(ctx.model(ctx.x[vrows]), 1))
    assert float(got.detach()) == pytest.approx(float(expected), abs=1e-6)


def test_schedule_knobs_without_the_separate_pass_are_refused() -> None:
    with pytest.raises(ConfigError, match="separate"):
        DEFENSES["mixup_mmd"].parse_params({"gap_threshold": 5.0})
    with pytest.raises(ConfigError, match="separate"):
        DEFENSES["mixup_mmd"].parse_params({"skip_last_epoch": True})


def test_mistcode_preset_loads_and_is_accepted() -> None:
    cfg = prepare_config(RunConfig.from_toml(RECIPES / "location-mixup_mmd-mistcode.toml"))
    p = DEFENSES["mixup_mmd"].parse_params(cfg.params)
    assert (cfg.defense, cfg.epochs, cfg.reference_size, cfg.weight_decay) == ("mixup_mmd", 100, 500, 1e-5)
    assert p == MixupMmdParams(mixup_alpha=0.0, mmd_weight=6.5, sigma=1.0, separate=True, gap_threshold=3.0,
                               skip_last_epoch=True, class_wise=False)


def test_separate_pass_end_to_end_in_process(tiny_cfg: RunConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, defense="mixup_mmd",
                              params={"mixup_alpha": 0.0, "separate": True, "gap_threshold": -100.0})
    run = open_run(prepare_config(cfg), None)
    train_runs([run], 1, "inprocess")
    assert all(np.isfinite(h["local_loss"]) for h in run.history)
