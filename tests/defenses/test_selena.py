"""SELENA: leave-out assignment, soft labels from the sub-models that never saw a member, the whole
procedure in-process and through the Flower simulation, and resume after an interruption."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmist.config import RunConfig
from fedmist.defenses import get_defense
from fedmist.defenses.selena import TARGETS, average_left_out, leave_out
from fedmist.runs.inprocess import InProcessFederation
from fedmist.training.jobs import LocalJob, LocalResult, PredictJob, PredictResult
from fedmist.training.workspace import get_workspace
from fedmist.errors import ConfigError
from fedmist.runs.rundir import open_run, prepare_config, train_run

K, L = 4, 2
RECIPES = Path(__file__).resolve().parents[2] / "fedmist" / "recipes"


class RecordingFederation(InProcessFederation):
    """The in-process federation, keeping every job and result for inspection."""

    def __init__(self) -> None:
        self.local_jobs: list[LocalJob] = []
        self.local_results: list[LocalResult] = []
        self.predict_jobs: list[PredictJob] = []
        self.predict_results: list[PredictResult] = []

    def local(self, cfg, jobs):
        results = super().local(cfg, jobs)
        self.local_jobs += jobs
        self.local_results += results
        return results

    def predict(self, cfg, jobs):
        results = super().predict(cfg, jobs)
        self.predict_jobs += jobs
        self.predict_results += results
        return results


class Interrupted(Exception):
    pass


class StopAfter(InProcessFederation):
    """The in-process federation that dies (like a killed process) before its ``rounds+1``-th training round."""

    def __init__(self, rounds: int) -> None:
        self.left = rounds

    def local(self, cfg, jobs):
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        return super().local(cfg, jobs)


def selena_cfg(**params) -> RunConfig:
    return prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="selena", epochs=2,
                                    batch_size=20, train_size=120, seed=7, params={"K": K, "L": L, **params}))


def _softmax_np(state: dict, cfg: RunConfig, rows: np.ndarray) -> np.ndarray:
    """Probability vectors of a model computed here, apart from the engine's predict path."""
    ws = get_workspace(cfg)
    ws.model.load_state_dict(state)
    ws.model.eval()
    with torch.no_grad():
        return torch.softmax(ws.model(ws.x[torch.from_numpy(rows)].float()), dim=1).double().numpy()


def test_every_member_is_left_out_of_exactly_L_sub_models_by_a_seeded_draw() -> None:
    m = leave_out(200, 25, 10, seed=3)
    assert m.shape == (200, 25) and m.dtype == bool
    assert (m.sum(axis=1) == 10).all()
    assert np.array_equal(m, leave_out(200, 25, 10, seed=3))
    assert not np.array_equal(m, leave_out(200, 25, 10, seed=4))
    # Uniform over sub-models: each is left out of ~200*10/25 = 80 members.
    assert 55 < m.sum(axis=0).min() and m.sum(axis=0).max() < 105
    # The draw is per member: not every member gets the same set.
    assert len({tuple(np.flatnonzero(r)) for r in m}) > 50


def test_average_left_out_by_hand() -> None:
    left = np.array([[True, False, True], [False, True, True]])  # member 0: models 0, 2; member 1: 1, 2
    probs = [np.array([[0.6, 0.4]]), np.array([[0.1, 0.9]]), np.array([[0.2, 0.8], [0.5, 0.5]])]
    np.testing.assert_allclose(average_left_out(left, probs), [[0.4, 0.6], [0.3, 0.7]], rtol=1e-6)


def test_sub_models_train_on_the_rest_and_soft_labels_come_only_from_those_that_did_not() -> None:
    cfg = selena_cfg()
    assert cfg.clients == K
    run = open_run(cfg, None)
    fed = RecordingFederation()
    train_run(run, fed)
    members = run.split.members
    left = leave_out(len(members), K, L, cfg.seed)

    sub_jobs = [j for j in fed.local_jobs if j.step == "sgd"]
    assert sorted((j.epoch, j.client) for j in sub_jobs) == [(e, k) for e in (1, 2) for k in range(K)]
    for j in sub_jobs:  # sub-model k trains on exactly the members not left out of it
        assert np.array_equal(np.sort(j.train_rows), np.sort(members[~left[:, j.client]]))
    trained_on = np.array([[m in set(j.train_rows.tolist()) for j in sub_jobs if j.epoch == 1]
                           for m in members.tolist()])
    assert (trained_on.sum(axis=1) == K - L).all()
    # Each client trained its own sub-model: epoch 2 starts from that client's epoch-1 result.
    ep1 = {r.client: r.state for r, j in zip(fed.local_results, fed.local_jobs) if j.step == "sgd" and j.epoch == 1}
    for j in (j for j in sub_jobs if j.epoch == 2):
        for name, v in ep1[j.client].items():
            assert torch.equal(j.state[name], v)

    # Hand computation of the soft labels from the final sub-models, apart from the engine.
    final_subs = {r.client: r.state for r, j in zip(fed.local_results, fed.local_jobs) if j.step == "sgd" and j.epoch == 2}
    probs = np.stack([_softmax_np(final_subs[k], cfg, members) for k in range(K)])  # (K, N, classes)
    expected = np.einsum("knc,nk->nc", probs, left.astype(float)) / L
    from_trained = np.einsum("knc,nk->nc", probs, (~left).astype(float)) / (K - L)
    (distill_job, *rest) = [j for j in fed.local_jobs if j.step == "distill"]
    assert len(rest) == 1 and np.array_equal(distill_job.train_rows, members)
    np.testing.assert_allclose(distill_job.soft_targets, expected, atol=1e-5)
    assert np.abs(distill_job.soft_targets - from_trained).max() > 1e-3  # the test tells the two apart
    np.testing.assert_allclose(distill_job.soft_targets.sum(axis=1), 1.0, atol=1e-5)
    # The predict round asked each sub-model only about the members it never trained on.
    for pj in fed.predict_jobs:
        assert pj.full and np.array_equal(pj.rows, members[left[:, pj.client]])


def test_in_process_end_to_end_leaves_only_the_distilled_model(tmp_path: Path) -> None:
    cfg = selena_cfg()
    run = open_run(cfg, tmp_path / "run")
    train_run(run, InProcessFederation())
    out = tmp_path / "run"
    assert (out / "model.pt").is_file() and not (out / "checkpoint.pt").exists()
    assert not (out / "defense.pt").exists()  # no sub-models or soft labels kept
    model = torch.load(out / "model.pt", weights_only=True)
    assert sorted(model) == sorted(get_workspace(cfg).model.state_dict())
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]  # 2 sub-model epochs, then 2 of distillation
    assert [h["stage"] for h in history] == [1, 1, 2, 2]
    assert all("test_acc" in h for h in history)
    # The run's result is the distilled model (last row), which scores it.
    ws = get_workspace(cfg)
    ws.model.load_state_dict(model)
    from fedmist.training.evaluate import accuracy
    assert json.loads((out / "metrics.json").read_text())["summary"]["test_acc"] == pytest.approx(
        accuracy(ws.model, ws.x, ws.y, run.split.test))


@pytest.mark.parametrize("rounds, stage_key", [(1, "aux/selena/sub3/net.0.weight"), (3, TARGETS)])
def test_resume_after_interruption_ends_with_the_same_weights(tmp_path: Path, rounds: int, stage_key: str) -> None:
    cfg = selena_cfg()
    whole = open_run(cfg, tmp_path / "whole")
    train_run(whole, InProcessFederation())
    expected = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)

    cut = open_run(cfg, tmp_path / "cut")
    with pytest.raises(Interrupted):  # dies in a sub-model epoch (rounds=1) or in distillation (3)
        train_run(cut, StopAfter(rounds))
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == rounds and stage_key in ckpt["state"]
    resumed = open_run(cfg, tmp_path / "cut", resume=True)
    assert resumed.start_epoch == rounds + 1
    train_run(resumed, InProcessFederation())
    got = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0)
    history = json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def optimiser_settings_seen(cfg: RunConfig) -> tuple[list[tuple[str, float, float, int]], dict]:
    """Train ``cfg`` in-process; the distinct (step, momentum, weight decay, batch size) its jobs
    were sent with, and the final state (shared with DMP's tests)."""
    seen: list[tuple[str, float, float, int]] = []

    class Seeing(InProcessFederation):
        def local(self, cfg, jobs):
            seen.extend((j.step, cfg.momentum, cfg.weight_decay, cfg.batch_size) for j in jobs)
            return super().local(cfg, jobs)

    run = open_run(cfg, None)
    train_run(run, Seeing())
    return sorted(set(seen)), run.state


def test_the_student_trains_with_its_own_momentum_and_decay_and_the_sub_models_with_the_runs() -> None:
    """HAMP's artefact trains SELENA's sub-models with plain SGD and the student with momentum 0.99
    and weight decay 1e-5: the student's jobs carry those, the sub-models' the run's, and the
    student then differs from one trained with the run's settings (the knobs are not ignored)."""
    plain = {"momentum": 0.0, "weight_decay": 0.0}
    own, own_state = optimiser_settings_seen(prepare_config(RunConfig.from_dict(plain, base=selena_cfg(
        distill_momentum=0.99, distill_weight_decay=1e-3, distill_batch_size=5))))
    runs, runs_state = optimiser_settings_seen(prepare_config(RunConfig.from_dict(plain, base=selena_cfg())))
    batch = selena_cfg().batch_size
    assert own == [("distill", 0.99, 1e-3, 5), ("sgd", 0.0, 0.0, batch)]
    assert runs == [("distill", 0.0, 0.0, batch), ("sgd", 0.0, 0.0, batch)]
    assert any(not torch.allclose(own_state[k], runs_state[k]) for k in own_state)


def test_bad_knobs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="L < params.K"):
        selena_cfg(L=4)
    with pytest.raises(ConfigError, match="no parameter 'M'"):
        selena_cfg(M=1)
    with pytest.raises(ConfigError, match="distill_momentum must be in"):
        selena_cfg(distill_momentum=1.0)
    with pytest.raises(ConfigError, match="distill_weight_decay must be"):
        selena_cfg(distill_weight_decay=-0.5)


def test_flower_simulation_via_the_cli_matches_in_process(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "selena"
    proc = subprocess.run([sys.executable, "-m", "fedmist", "simulate", "--dataset", "synthetic:240x12x3",
                           "--model", "mlp-small", "--defense", "selena", "--epochs", "2", "--batch-size", "20",
                           "--train-size", "120", "--seed", "7", "--set", f"params.K={K}", "--set", f"params.L={L}",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "C=4" in proc.stdout
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert not (out / "checkpoint.pt").exists() and not (out / "defense.pt").exists()
    run = open_run(selena_cfg(), None)
    train_run(run, InProcessFederation())
    got = torch.load(out / "model.pt", weights_only=True)
    for k, v in run.state.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6)


def test_artefact_preset_loads_with_the_artefacts_settings() -> None:
    cfg = prepare_config(RunConfig.from_toml(RECIPES / "location-selena-artefact.toml"))
    p = get_defense("selena").parse_params(cfg.params)
    assert (cfg.defense, cfg.epochs, cfg.lr, cfg.momentum, cfg.batch_size, cfg.lr_schedule, cfg.clients) == \
        ("selena", 50, 0.5, 0.0, 64, [60, 90], 25)
    assert (p.K, p.L, p.distill_epochs, p.distill_momentum, p.distill_weight_decay) == (25, 10, 100, 0.99, 1e-5)
    assert p.distill_lr == pytest.approx(1.0 / 30, rel=1e-5)  # the artefact's lr 1.0 on an element-mean KL
