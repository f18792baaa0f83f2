"""`fedmist simulate` end to end through the real Flower simulation engine (Ray backend)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import fedmist
from fedmist.config import RunConfig
from fedmist.engine import loop
from fedmist.runs.inprocess import InProcessFederation
from fedmist.engine.loop import run_epoch
from fedmist.runs.rundir import default_out, open_run, prepare_config

TINY = ["--dataset", "synthetic:240x12x3", "--model", "mlp-small", "--clients", "3", "--epochs", "2",
        "--batch-size", "20", "--lambda", "5", "--train-size", "120", "--seed", "7"]


def _fedmist(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedmist", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def _in_process(cfg: RunConfig) -> dict[str, torch.Tensor]:
    run = open_run(prepare_config(cfg), None)
    return loop.train(run.cfg, run.spec, InProcessFederation(), run.state, run.split.members)


def test_flower_simulation_matches_in_process_training_and_writes_the_run_dir(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "tiny"
    # A separate query.predict round (3 rounds per epoch) through Flower ...
    proc = _fedmist("simulate", *TINY, "--set", "predict_in_train_reply=false", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "summary" in proc.stdout and "SYNTHETIC" in proc.stdout
    for name in ("config.json", "model.pt", "split.npz", "metrics.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert all(h["xdiff_loss"] is not None for h in metrics["history"])
    assert 0.0 <= metrics["summary"]["test_acc"] <= 1.0 and metrics["summary"]["synthetic"] is True

    run = fedmist.load_run(out)
    assert not run.model.training
    assert len(run.split["members"]) == 120 and not set(run.split["members"]) & set(run.split["nonmembers"])
    # ... computes exactly what the plain in-process loop computes with predictions carried in the
    # phase-1 replies (2 rounds per epoch).
    assert run.config.predict_in_train_reply is False
    expected = _in_process(dataclasses.replace(run.config, predict_in_train_reply=True))
    got = run.model.state_dict()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)

    # Never overwrite without --force; a clear one-line error and exit code 2.
    again = _fedmist("simulate", *TINY, "--out", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_resume_continues_from_the_checkpoint_and_ends_with_the_same_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", clients=3, epochs=2,
                                   batch_size=20, lam=5.0, train_size=120, seed=7, mode="private"))
    # An "interrupted" run: epoch 1 done and checkpointed, then the process died.
    run = open_run(cfg, out)
    state, rep = run_epoch(cfg, run.spec, InProcessFederation(), run.state, run.split.members, 1)
    run.on_epoch(state, rep)
    assert (out / "checkpoint.pt").is_file() and not (out / "model.pt").exists()

    args = ["simulate", "--dataset", "synthetic:240x12x3", "--model", "mlp-small", "--clients", "3",
            "--epochs", "2", "--batch-size", "20", "--lambda", "5", "--train-size", "120", "--seed", "7",
            "--mode", "private", "--out", str(out)]
    mismatch = _fedmist(*args[:-2], "--lambda", "6", "--out", str(out), "--resume", cwd=tmp_path)
    assert mismatch.returncode == 2 and "lam" in mismatch.stderr
    proc = _fedmist(*args, "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming at epoch 2" in proc.stdout
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    got = torch.load(out / "model.pt", weights_only=True)
    expected = _in_process(cfg)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)
    assert np.array_equal(np.load(out / "split.npz")["members"], run.split.members)


def test_epoch_time_counts_the_training_rounds_not_the_evaluation(monkeypatch) -> None:
    """The last epoch is always evaluated; its evaluation must not inflate its epoch time, or a
    benchmark's median over a few epochs reports the evaluation as training speed. A fake clock that
    only the evaluation advances makes this independent of the machine's load."""
    import time

    cfg = prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", clients=1, defense="sgd",
                                   epochs=2, batch_size=20, train_size=120, seed=7, eval_every=5))
    run = open_run(cfg, None)
    real_evaluate = run.evaluate
    clock = [1024.0]

    def slow_evaluate(state):
        clock[0] += 0.25  # the evaluation "takes" 0.25 s (exact in binary); training takes no time here
        return real_evaluate(state)

    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(run, "evaluate", slow_evaluate)
    state = run.state
    run.begin()
    for epoch in (1, 2):
        state, rep = run_epoch(cfg, run.spec, InProcessFederation(), state, run.split.members, epoch)
        run.on_epoch(state, rep)
    first, last = run.history
    assert "eval_time" not in first and "test_acc" not in first  # epoch 1 is not an eval epoch
    assert last["eval_time"] == 0.25 and 0.0 <= last["test_acc"] <= 1.0
    assert last["epoch_time"] == 0.0  # would be 0.25 if the evaluation were counted
    assert run.phase_time["eval"] == last["eval_time"]


def test_the_same_command_again_resumes_or_shows_its_own_run(tmp_path: Path) -> None:
    """Without --out a run goes to runs/<dataset>-<defense>-c<C>-s<seed>: the README's quick start
    and its first example are the same run, so the second resumes or shows it, never refuses."""
    cfg = prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", clients=3, epochs=2,
                                   batch_size=20, lam=5.0, train_size=120, seed=7))
    out = tmp_path / default_out(cfg)
    run = open_run(cfg, out)  # interrupted after epoch 1
    state, rep = run_epoch(cfg, run.spec, InProcessFederation(), run.state, run.split.members, 1)
    run.on_epoch(state, rep)

    first = _fedmist("simulate", *TINY, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "unfinished run of this config: resuming" in first.stdout and "resuming at epoch 2" in first.stdout
    got = torch.load(out / "model.pt", weights_only=True)
    expected = _in_process(cfg)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)

    metrics = (out / "metrics.json").read_text()
    again = _fedmist("simulate", *TINY, "--defense", "mist", cwd=tmp_path)
    assert again.returncode == 0 and "already holds this run, finished" in again.stdout and "summary" in again.stdout
    assert (out / "metrics.json").read_text() == metrics  # nothing retrained
    other = _fedmist("simulate", *TINY, "--lambda", "6", cwd=tmp_path)  # another config, same directory
    assert other.returncode == 2 and "already exists" in other.stderr
