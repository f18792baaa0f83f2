"""The explicit active attack changes what the attacker uploads and says so; DP-FedAvg clips and noises."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from fedmist.engine.client_steps import run_local
from fedmist.runs.inprocess import InProcessFederation
from fedmist.training.jobs import LocalJob
from fedmist.defenses import get_defense
from fedmist.training.workspace import get_workspace
from fedmist.engine.recording import load_round
from fedmist.runs.rundir import open_run, prepare_config, train_run


def _upload(cfg, client: int, ascent: np.ndarray):
    ws = get_workspace(cfg)
    state = get_defense(cfg.defense).initial_state(cfg)
    job = LocalJob(client, 1, cfg.lr, state, np.arange(0, 40), ascent_rows=ascent)
    return state, run_local(ws, cfg, job, get_defense(cfg.defense)).state


def test_gradient_ascent_changes_the_upload_and_is_logged(fl_cfg, capsys) -> None:
    cfg = prepare_config(dataclasses.replace(fl_cfg, active_attack="client:1", active_lr=0.5, active_steps=3))
    targets = np.arange(150, 170)
    _, honest = _upload(dataclasses.replace(cfg, active_attack=""), 1, targets)
    start, attacked = _upload(cfg, 1, targets)
    out = capsys.readouterr().out
    assert "ACTIVE ATTACK" in out and "client 1" in out and "20 target rows" in out
    assert any(not torch.equal(honest[k], attacked[k]) for k in honest)
    # ... and the ascent raised the targets' loss (the upload is worse on exactly those rows)
    ws = get_workspace(cfg)
    xb, yb = ws.x[targets].float(), ws.y[targets]

    def loss(state) -> float:
        ws.model.load_state_dict(state)
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(ws.model(xb), yb))
    assert loss(attacked) > loss(honest) + 0.05
    # a client that is not the attacker uploads the honest weights even if handed target rows
    _, other = _upload(cfg, 0, targets)
    _, other_honest = _upload(dataclasses.replace(cfg, active_attack=""), 0, targets)
    assert all(torch.equal(other[k], other_honest[k]) for k in other)


def test_active_run_logs_every_round_and_saves_its_targets(fl_cfg, tmp_path, capsys) -> None:
    cfg = prepare_config(dataclasses.replace(fl_cfg, active_attack="client:2", record_updates=True))
    run = open_run(cfg, tmp_path / "r")
    train_run(run, InProcessFederation())
    out = capsys.readouterr().out
    assert out.count("ACTIVE ATTACK round") == cfg.epochs
    hist = json.loads((tmp_path / "r" / "metrics.json").read_text())["history"]
    assert all("client 2" in h["active_attack"] for h in hist)
    with np.load(tmp_path / "r" / "active_targets.npz") as z:
        assert z["is_member"].sum() == (~z["is_member"]).sum() > 0


def test_dp_fedavg_clips_every_upload_adds_seeded_noise_and_reports_epsilon(fl_cfg, tmp_path) -> None:
    cfg = prepare_config(dataclasses.replace(fl_cfg, fl_dp_noise=0.5, fl_dp_clip=0.05, record_updates=True))
    runs = []
    for name in ("a", "b"):
        run = open_run(cfg, tmp_path / name)
        train_run(run, InProcessFederation())
        runs.append(run)
    rec = load_round(tmp_path / "a" / "updates", 1)
    for c, upd in rec.uploads.items():
        norm = np.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in upd.values()))
        assert norm <= 0.05 * 1.01, (c, norm)  # float16 storage: 1 % slack
    # equal weights under DP; the global model is the mean upload plus noise of std z·C/m
    assert all(abs(w - 1 / 3) < 1e-12 for w in rec.weights.values())
    noise = np.concatenate([(rec.end[k] - rec.start[k] - np.mean([rec.uploads[c][k].astype(np.float64)
                                                                  for c in rec.uploads], 0)).ravel() for k in rec.start])
    assert abs(noise.std() - 0.5 * 0.05 / 3) < 0.15 * (0.5 * 0.05 / 3)
    for k in runs[0].state:  # same seed, same noise
        assert torch.equal(runs[0].state[k], runs[1].state[k])
    dp = json.loads((tmp_path / "a" / "metrics.json").read_text())["summary"]["fl"]["dp"]
    assert 0 < dp["epsilon"] < float("inf") and dp["delta"] == 1e-5 and "q = 1" in dp["sampling"]
