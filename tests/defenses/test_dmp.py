"""DMP: the student sees only the selected reference rows, selection by lowest teacher entropy,
temperature-softened soft labels, and the whole procedure in-process (with resume)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmist.config import RunConfig
from fedmist.defenses import dmp as dm
from fedmist.defenses.dmp import ROWS, TARGETS, entropy, lowest_entropy, soften
from fedmist.defenses.registry import get_defense
from fedmist.engine.loop import train
from fedmist.errors import ConfigError
from fedmist.models import build_model
from fedmist.runs.inprocess import InProcessFederation
from fedmist.runs.rundir import open_run, prepare_config, train_run
from fedmist.training.steps import StepContext
from fedmist.training.workspace import get_workspace
from tests.defenses.test_selena import (
    Interrupted,
    RecordingFederation,
    StopAfter,
    _softmax_np,
    optimiser_settings_seen,
)


def dmp_cfg(**params) -> RunConfig:
    return prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="dmp", epochs=2,
                                    batch_size=20, train_size=120, seed=7, params=params))


def test_entropy_and_lowest_entropy_selection_by_hand() -> None:
    probs = np.array([[0.5, 0.5, 0.0],   # ln 2 = 0.6931
                      [1.0, 0.0, 0.0],   # 0
                      [0.2, 0.3, 0.5],   # 1.0297
                      [0.9, 0.05, 0.05]])  # 0.3944
    np.testing.assert_allclose(entropy(probs), [0.693147, 0.0, 1.029653, 0.394398], atol=1e-6)
    assert lowest_entropy(probs, 2).tolist() == [1, 3]
    assert lowest_entropy(probs, 4).tolist() == [1, 3, 0, 2]


def test_soften_is_the_softmax_of_logits_over_temperature() -> None:
    p = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    # softmax([1, 0.5, 0]) = (e, e^0.5, 1) / 5.367003
    np.testing.assert_allclose(soften(p[None], 2.0), [[0.506480, 0.307196, 0.186324]], atol=1e-6)
    np.testing.assert_allclose(soften(p[None], 1.0), p[None], atol=1e-7)
    assert soften(np.array([[1.0, 0.0]]), 3.0).tolist() == [[1.0, 0.0]]


def test_student_trains_only_on_the_lowest_entropy_reference_rows_with_softened_teacher_labels() -> None:
    cfg = dmp_cfg(temperature=2.0, select_size=25)
    assert cfg.clients == 1
    run = open_run(cfg, None)
    members, reference = run.split.members, run.split.reference
    assert len(reference) == 60 and not set(members.tolist()) & set(reference.tolist())
    fed = RecordingFederation()
    train_run(run, fed)

    teacher_jobs = [j for j in fed.local_jobs if j.step != "distill"]
    student_jobs = [j for j in fed.local_jobs if j.step == "distill"]
    assert [j.epoch for j in teacher_jobs] == [1, 2] and [j.epoch for j in student_jobs] == [3, 4]
    for j in teacher_jobs:  # the teacher: plain SGD on the members
        assert np.array_equal(np.sort(j.train_rows), np.sort(members))
    # The teacher is exactly an undefended SGD run's loop on the same members.
    sgd_cfg = prepare_config(RunConfig(**{**cfg.to_dict(), "defense": "sgd", "params": {}, "reference_size": 60}))
    sgd_run = open_run(sgd_cfg, None)
    sgd_teacher = train(sgd_cfg, sgd_run.spec, InProcessFederation(), sgd_run.state, members)
    (pj,) = fed.predict_jobs
    for k, v in sgd_teacher.items():
        torch.testing.assert_close(pj.state[k], v, rtol=0, atol=0)

    # Hand check: the teacher's entropies on every reference row, apart from the engine.
    probs = _softmax_np(pj.state, cfg, reference)
    ent = -(probs * np.log(np.clip(probs, 1e-300, None))).sum(axis=1)
    chosen = reference[np.argsort(ent)[:25]]
    rows = student_jobs[0].train_rows
    assert all(np.array_equal(j.train_rows, rows) for j in student_jobs)
    assert len(rows) == 25 and set(rows.tolist()) == set(chosen.tolist())
    assert not set(rows.tolist()) & set(members.tolist())  # never a member
    assert ent[np.isin(reference, rows)].max() <= ent[~np.isin(reference, rows)].min()
    # Soft labels: the teacher's softmax at T=2 on those rows, p^(1/2) renormalised.
    p = _softmax_np(pj.state, cfg, rows)
    expected = np.sqrt(p) / np.sqrt(p).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(student_jobs[0].soft_targets, expected, atol=1e-5)
    assert np.abs(student_jobs[0].soft_targets - p).max() > 1e-3  # softer than T=1


def _interrupt_in_the_student_then_resume(cfg: RunConfig, path: Path, expected: dict) -> dict:
    """Train to epoch 3 (the student's first) and die, resume, and end with exactly ``expected``'s
    weights; returns the checkpoint the interrupted run left."""
    cut = open_run(cfg, path)
    with pytest.raises(Interrupted):  # dies in the student's second epoch
        train_run(cut, StopAfter(3))
    ckpt = torch.load(path / "checkpoint.pt", weights_only=False)
    resumed = open_run(cfg, path, resume=True)
    train_run(resumed, InProcessFederation())
    got = torch.load(path / "model.pt", weights_only=True)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)
    return ckpt


def test_in_process_end_to_end_and_resume_in_the_student_stage(tmp_path: Path) -> None:
    cfg = dmp_cfg()
    whole = open_run(cfg, tmp_path / "whole")
    train_run(whole, InProcessFederation())
    out = tmp_path / "whole"
    assert (out / "model.pt").is_file() and not (out / "checkpoint.pt").exists() and not (out / "defense.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(h["epoch"], h["stage"]) for h in metrics["history"]] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert 0.0 <= metrics["summary"]["test_acc"] <= 1.0
    expected = torch.load(out / "model.pt", weights_only=True)
    assert sorted(expected) == sorted(get_workspace(cfg).model.state_dict())

    ckpt = _interrupt_in_the_student_then_resume(cfg, tmp_path / "cut", expected)
    assert ckpt["epoch"] == 3 and ROWS in ckpt["state"] and TARGETS in ckpt["state"]


def test_bad_knobs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="reference"):
        prepare_config(RunConfig(dataset="synthetic:240x12x3", defense="dmp", reference_size=0))
    with pytest.raises(ConfigError, match="temperature"):
        dmp_cfg(temperature=0)
    run = open_run(dmp_cfg(select_size=61), None)
    with pytest.raises(ConfigError, match="selects 61 of 60"):
        train_run(run, InProcessFederation())


# --- synthetic rows from the members' feature marginals, labelled only by the teacher ---



RECIPES = Path(__file__).resolve().parents[2] / "fedmist" / "recipes"


def synthetic_cfg(**params) -> RunConfig:
    return prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="dmp", epochs=2,
                                     batch_size=20, train_size=120, seed=7, reference_size=0,
                                     params={"synthetic_rows": 50, **params}))


def test_synthetic_features_come_from_each_columns_member_values() -> None:
    members = np.array([[0.0, 10.0, 100.0], [1.0, 11.0, 101.0], [2.0, 12.0, 102.0]], dtype=np.float32)
    rows = dm.synthetic_features(members, 200, seed=3)
    assert rows.shape == (200, 3)
    for j in range(3):
        assert set(rows[:, j].tolist()) <= set(members[:, j].tolist())
    assert len({tuple(r) for r in rows.tolist()}) > 3  # mixes of members, not copies of them
    np.testing.assert_array_equal(rows, dm.synthetic_features(members, 200, seed=3))


def test_synthetic_seed_depends_on_the_member_set_only() -> None:
    assert dm.synthetic_seed(np.array([5, 1, 9])) == dm.synthetic_seed(np.array([1, 9, 5]))
    assert dm.synthetic_seed(np.array([5, 1, 9])) != dm.synthetic_seed(np.array([5, 1, 8]))


def _synthetic_ctx(y: torch.Tensor) -> StepContext:
    g = np.random.default_rng(3)
    x = torch.from_numpy(g.normal(size=(80, 6)).astype(np.float32))
    torch.manual_seed(0)
    targets = np.abs(g.normal(size=(30, 3))).astype(np.float32)
    targets /= targets.sum(1, keepdims=True)
    targets[::3] = 0  # not selected
    return StepContext(build_model("mlp-small", (6,), 3), x, y, np.arange(40), lr=0.1, batch_size=10, momentum=0.9,
                       weight_decay=0.0, mixup_alpha=0.0, rng=np.random.default_rng(5), device="cpu", epoch=3,
                       epochs=2, params=dm.DmpParams(synthetic_rows=30), num_classes=3, soft_targets=targets)


def test_the_synthetic_student_step_never_reads_a_label() -> None:
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 3, 80))
    a, b = _synthetic_ctx(labels), _synthetic_ctx(torch.full((80,), -1))  # -1: no label at all
    assert np.isfinite(dm.synthetic_distill_step(a))
    dm.synthetic_distill_step(b)
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, rtol=0, atol=0)


def test_student_on_synthetic_rows_with_the_teachers_soft_labels_and_no_member_label() -> None:
    cfg = synthetic_cfg(select_size=30, temperature=2.0)
    run = open_run(cfg, None)
    members = run.split.members
    assert len(run.split.reference) == 0 and len(members) == 120
    fed = RecordingFederation()
    train_run(run, fed)
    student_jobs = [j for j in fed.local_jobs if j.epoch > cfg.epochs]
    assert [j.epoch for j in student_jobs] == [3, 4] and all(j.step == dm.SYNTHETIC_STEP for j in student_jobs)
    teacher = [j for j in fed.local_jobs if j.epoch <= cfg.epochs]
    assert len(teacher) == 2 and not fed.predict_jobs  # the teacher labels the synthetic rows itself
    job = student_jobs[0]
    assert np.array_equal(job.train_rows, members)  # marginals of the members; never trained on as rows
    assert job.soft_targets.shape == (50, 3)
    chosen = job.soft_targets.sum(1) > 0
    assert chosen.sum() == 30
    # Hand check: the teacher (state after epoch 2) on the synthetic rows, entropy selection, T = 2.
    ws = get_workspace(cfg)
    feats = dm.synthetic_features(ws.x[torch.from_numpy(members)].float().numpy(), 50, dm.synthetic_seed(members))
    teacher_state = fed.local_results[1].state
    ws.model.load_state_dict(teacher_state)
    ws.model.eval()
    with torch.no_grad():
        probs = torch.softmax(ws.model(torch.from_numpy(feats)), 1).double().numpy()
    ent = -(probs * np.log(np.clip(probs, 1e-300, None))).sum(1)
    assert set(np.flatnonzero(chosen).tolist()) == set(np.argsort(ent)[:30].tolist())
    expected = np.sqrt(probs[chosen]) / np.sqrt(probs[chosen]).sum(1, keepdims=True)
    np.testing.assert_allclose(job.soft_targets[chosen], expected, atol=1e-5)
    assert 0.0 <= run.summary()["test_acc"] <= 1.0


def test_synthetic_student_resumes_in_the_student_stage(tmp_path: Path) -> None:
    cfg = synthetic_cfg()
    whole = open_run(cfg, tmp_path / "whole")
    train_run(whole, InProcessFederation())
    expected = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    _interrupt_in_the_student_then_resume(cfg, tmp_path / "cut", expected)


def test_synthetic_knob_errors() -> None:
    with pytest.raises(ConfigError, match="synthetic_rows"):
        synthetic_cfg(synthetic_rows=-1)
    run = open_run(synthetic_cfg(select_size=51), None)
    with pytest.raises(ConfigError, match="selects 51 of 50 synthetic rows"):
        train_run(run, InProcessFederation())


def test_artefact_preset_loads_and_is_accepted() -> None:
    cfg = prepare_config(RunConfig.from_toml(RECIPES / "location-dmp-artefact.toml"))
    p = get_defense("dmp").parse_params(cfg.params)
    assert (cfg.defense, cfg.epochs, cfg.reference_size, cfg.lr_schedule) == ("dmp", 100, 0, [120, 180])
    # the artefact's lr 0.1 on an element-mean KL over 30 classes, momentum 0.99, decay 1e-5, batch 64
    assert p == dm.DmpParams(temperature=1.0, select_fraction=1.0, distill_epochs=200, distill_lr=0.00333333,
                             synthetic_rows=10000, distill_momentum=0.99, distill_weight_decay=1e-5,
                             distill_batch_size=64)
    assert (cfg.momentum, cfg.batch_size, cfg.weight_decay) == (0.9, 100, 0.0)  # the teacher: location-sgd's


@pytest.mark.parametrize("synthetic", [False, True])
def test_the_student_trains_with_its_own_optimiser_and_the_teacher_with_the_runs(synthetic: bool) -> None:
    """The student's jobs carry ``distill_momentum`` / ``distill_weight_decay`` / ``distill_batch_size``,
    the teacher's the run's, on reference rows and on synthetic rows alike, and the student then
    differs from one trained with the run's settings (the knobs are not ignored)."""
    make = synthetic_cfg if synthetic else dmp_cfg
    own, own_state = optimiser_settings_seen(make(distill_momentum=0.99, distill_weight_decay=1e-3,
                                                  distill_batch_size=7))
    runs, runs_state = optimiser_settings_seen(make())
    student = dm.SYNTHETIC_STEP if synthetic else "distill"
    teacher = ("", 0.9, 0.0, 20)  # the default step; RunConfig's momentum and decay, dmp_cfg's batch
    assert own == sorted([(student, 0.99, 1e-3, 7), teacher])
    assert runs == sorted([(student, 0.9, 0.0, 20), teacher])
    assert any(not torch.allclose(own_state[k], runs_state[k]) for k in own_state)


def test_student_optimiser_knob_errors() -> None:
    with pytest.raises(ConfigError, match="dmp's params.distill_momentum must be in"):
        dmp_cfg(distill_momentum=1.0)
    with pytest.raises(ConfigError, match="dmp's params.distill_weight_decay must be"):
        dmp_cfg(distill_weight_decay=-0.5)
    with pytest.raises(ConfigError, match="dmp's params.distill_batch_size must be"):
        dmp_cfg(distill_batch_size=-3)
