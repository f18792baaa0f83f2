"""`fedmist attack` on a run directory written by the engine: report files, cache reuse, errors."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from fedmist.cli import main
from fedmist.config import RunConfig
from fedmist.runs.rundir import open_run, prepare_config
from fedmist.flower.simulation import train_runs


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("attack") / "run"
    cfg = prepare_config(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="sgd", epochs=3,
                                   batch_size=20, train_size=100, seed=1))
    train_runs([open_run(cfg, out)], cfg.clients, engine="inprocess")
    return out


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["fedmist", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_attack_writes_the_report_and_reuses_cached_shadows(engine_run, monkeypatch, capsys) -> None:
    args = ["attack", str(engine_run), "--attacks", "loss,lira_online,rmia", "--shadows", "4",
            "--shadow-engine", "inprocess", "--bootstrap", "20"]
    code, out, err = _cli(args, monkeypatch, capsys)
    assert code == 0, err
    for name in ("audit.json", "audit.csv", "scores.npz", "roc.png", "roc_linear.png"):
        assert (engine_run / name).is_file(), name
    report = json.loads((engine_run / "audit.json").read_text())
    assert set(report["attacks"]) == {"loss", "lira_online", "rmia"}
    keep = np.load(engine_run / "shadows" / "keep.npy")
    assert keep.shape[0] == 4 and (keep.sum(0) == 2).all()  # every example IN for exactly half
    models = sorted((engine_run / "shadows" / "models").glob("*.pt"))
    stamps = [m.stat().st_mtime_ns for m in models]
    code, _, err = _cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert [m.stat().st_mtime_ns for m in models] == stamps  # cached shadows are not retrained


@pytest.mark.parametrize("extra, message", [
    (["--attacks", "nosuch"], "nosuch"),
    (["--shadows", "3"], "even"),
])
def test_attack_bad_input(engine_run, monkeypatch, capsys, extra, message) -> None:
    code, _, err = _cli(["attack", str(engine_run), "--shadow-engine", "inprocess", *extra], monkeypatch, capsys)
    assert code == 2 and message in err and err.startswith("error: ")


def test_attack_on_an_incomplete_run_dir(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(RunConfig())))
    code, _, err = _cli(["attack", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and "model.pt is missing" in err
