"""`fedmist simulate --mode fl` and `fedmist attack --threat`: the Flower engine equals the
in-process one, threat reports are written side by side, bad input is one line and exit code 2."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fedmist
from fedmist.cli import main
from fedmist.config import RunConfig
from fedmist.runs.inprocess import InProcessFederation
from fedmist.runs.rundir import open_run, prepare_config, train_run
from tests.test_cli_errors import run_cli

TINY = ["--mode", "fl", "--dataset", "synthetic:240x12x3", "--model", "mlp-small", "--clients", "3",
        "--batch-size", "20", "--lambda", "5", "--train-size", "120", "--seed", "7"]


def _fedmist(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedmist", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _trained(fl_cfg: RunConfig, path: Path, **changes) -> Path:
    cfg = prepare_config(dataclasses.replace(fl_cfg, **changes))
    train_run(open_run(cfg, path), InProcessFederation())
    return path


def test_flower_fl_mode_matches_in_process_and_threat_reports_are_written(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "fl"
    # MIST-in-FL (peers' phase-1 weights forwarded), Dirichlet partition, an active attacker:
    # every FL message field travels through the real Flower simulation engine.
    proc = _fedmist("simulate", *TINY, "--defense", "mist", "--rounds", "2", "--partition", "dirichlet:0.5",
                    "--record-updates", "--set", "active_attack=client:1", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ACTIVE ATTACK" in proc.stdout and "federated learning" in proc.stdout
    run = fedmist.load_run(out)
    assert run.config.mode == "fl" and run.config.epochs == 2
    ref = open_run(prepare_config(dataclasses.replace(run.config)), None)
    train_run(ref, InProcessFederation())
    got = run.model.state_dict()
    for k in got:
        torch.testing.assert_close(got[k], ref.state[k], rtol=0, atol=1e-6)
    fl = json.loads((out / "metrics.json").read_text())["summary"]["fl"]
    assert fl["recording"]["bytes"] > 0 and fl["partition"] == "dirichlet:0.5"



def test_client_threat_on_mist_reports_the_peer_weights_leak(fl_cfg, tmp_path, monkeypatch, capsys) -> None:
    out = _trained(fl_cfg, tmp_path / "m", defense="mist", record_updates=True, partition="dirichlet:0.5")
    monkeypatch.setattr(sys, "argv", ["fedmist", "attack", str(out), "--threat", "client:0", "--bootstrap", "10"])
    main()
    assert "MIST private-data mode leaks" in capsys.readouterr().out
    for name in ("audit-client0.json", "roc-client0.png", "audit-client0-peerleak.json", "scores-client0.npz"):
        assert (out / name).is_file(), name
    rep = json.loads((out / "audit-client0.json").read_text())
    assert set(rep["attacks"]) == {"global_loss_delta_mean", "global_grad_cosine_mean", "global_both_mean",
                                   "global_stacked_lr"}
    assert {"auc", "auc_ci", "at_fpr"} <= set(rep["attacks"]["global_loss_delta_mean"]["full"])
    leak = json.loads((out / "audit-client0-peerleak.json").read_text())
    assert leak["threat"]["peer"] == 1 and leak["n_members"] == leak["n_nonmembers"]
    peer_rows = np.load(out / "scores-client0-peerleak.npz")["indices"][leak_members(out, "client0-peerleak")]
    assert set(peer_rows) <= set(np.load(out / "partition.npz")["rows"][np.load(out / "partition.npz")["owner"] == 1])
    assert not (out / "audit.json").exists()  # the outsider audit's files are untouched


def leak_members(out: Path, suffix: str) -> np.ndarray:
    return np.load(out / f"scores-{suffix}.npz")["is_member"]


def test_server_threat_report_through_the_cli(fl_cfg, tmp_path, monkeypatch, capsys) -> None:
    out = _trained(fl_cfg, tmp_path / "r", record_updates=True)
    monkeypatch.setattr(sys, "argv", ["fedmist", "attack", str(out), "--threat", "server", "--bootstrap", "10"])
    main()  # returns normally on success (exits only on errors)
    assert "threat server" in capsys.readouterr().out
    rep = json.loads((out / "audit-server.json").read_text())
    assert rep["threat"]["threat"] == "server" and rep["n_members"] == rep["n_nonmembers"]
    victims = np.load(out / "scores-server.npz")["indices"]
    assert set(victims) <= set(np.load(out / "split.npz")["members"]) | set(np.load(out / "split.npz")["nonmembers"])


@pytest.mark.parametrize("args, message", [
    (["--partition", "dirichlet:0"], "Dirichlet α must be a finite number > 0"),
    (["--partition", "dirichlet:-0.5"], "Dirichlet α must be a finite number > 0"),
    (["--partition", "shards"], "partition must be 'iid' or 'dirichlet:ALPHA'"),
    (["--record-updates", "--max-record-gb", "0.000001"], "more than --max-record-gb"),
    (["--set", "active_attack=client:7"], "active_attack names client 7"),
    (["--defense", "hamp"], "--mode fl trains"),
    (["--clients", "1", "--defense", "sgd"], "--mode fl needs --clients >= 2"),
])
def test_bad_fl_input_is_one_line_and_exit_2(args, message, monkeypatch, capsys, tmp_path) -> None:
    code, err = run_cli(["simulate", *TINY, "--epochs", "1", *args, "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_fl_switches_outside_fl_mode_are_refused(monkeypatch, capsys, tmp_path) -> None:
    code, err = run_cli(["simulate", *TINY[2:], "--epochs", "1", "--record-updates", "--out", str(tmp_path / "r")],
                        monkeypatch, capsys)
    assert code == 2 and "only apply with --mode fl" in err


def test_bad_threats_are_one_line_and_exit_2(fl_cfg, tmp_path, monkeypatch, capsys) -> None:
    plain = _trained(fl_cfg, tmp_path / "plain")  # no --record-updates
    code, err = run_cli(["attack", str(plain), "--threat", "server"], monkeypatch, capsys)
    assert code == 2 and "without --record-updates" in err and err.count("\n") == 1
    code, err = run_cli(["attack", str(plain), "--threat", "client:3"], monkeypatch, capsys)
    assert code == 2 and "names client 3" in err and "0..2" in err
    code, err = run_cli(["attack", str(plain), "--threat", "the-cloud"], monkeypatch, capsys)
    assert code == 2 and "--threat must be" in err
