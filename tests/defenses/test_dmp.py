"""DMP: the student sees only the selected reference rows, selection by lowest teacher entropy,
temperature-softened soft labels, and the whole procedure in-process (with resume)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmist.config import RunConfig
from fedmist.defenses.dmp import ROWS, TARGETS, entropy, lowest_entropy, soften
from fedmist.runs.inprocess import InProcessFederation
from fedmist.engine.loop import train
from fedmist.training.workspace import get_workspace
from fedmist.errors import ConfigError
from fedmist.runs.rundir import open_run, prepare_config, train_run
from tests.defenses.test_selena import Interrupted, RecordingFederation, StopAfter, _softmax_np


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

    cut = open_run(cfg, tmp_path / "cut")
    with pytest.raises(Interrupted):  # dies in the student's second epoch
        train_run(cut, StopAfter(3))
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 3 and ROWS in ckpt["state"] and TARGETS in ckpt["state"]
    resumed = open_run(cfg, tmp_path / "cut", resume=True)
    train_run(resumed, InProcessFederation())
    got = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)


def test_bad_knobs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="reference"):
        prepare_config(RunConfig(dataset="synthetic:240x12x3", defense="dmp", reference_size=0))
    with pytest.raises(ConfigError, match="temperature"):
        dmp_cfg(temperature=0)
    run = open_run(dmp_cfg(select_size=61), None)
    with pytest.raises(ConfigError, match="selects 61 of 60"):
        train_run(run, InProcessFederation())
