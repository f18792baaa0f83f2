"""Every command does what it says or refuses (issue 18): precedence, reuse only of equal configs,
resume from the run directory alone, Ctrl-C, default run directories that do not collide."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedmist.cli.options import build_config
from fedmist.cli.simulate import tagged_out
from fedmist.config import RunConfig
from fedmist.errors import RunDirError
from fedmist.runs.inprocess import InProcessFederation
from fedmist.runs.recipes import default_recipe
from fedmist.runs.rundir import open_run, prepare_config, train_run
from fedmist.studies.cells import audit_is_current, check_reuse

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "synthetic:240x12x3", "--model", "mlp-small", "--clients", "3", "--batch-size", "20",
        "--lambda", "5", "--train-size", "120", "--seed", "7"]


def _fedmist(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "fedmist", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _trained(cfg: RunConfig, out: Path) -> RunConfig:
    cfg = prepare_config(cfg)
    train_run(open_run(cfg, out), InProcessFederation())
    return cfg


def test_the_recipe_decides_dataset_and_defense_unless_an_option_says_otherwise() -> None:
    texas = default_recipe("texas", "mist")
    cfg, source = build_config({"epochs": 1}, [], texas)
    assert (cfg.dataset, cfg.defense, cfg.lam, cfg.epochs, source) == ("texas", "mist", 25.0, 1, texas)
    hamp, _ = build_config({}, [], default_recipe("location", "hamp"))
    assert (hamp.dataset, hamp.defense) == ("location", "hamp")
    prepare_config(hamp)  # no longer "defense 'mist' needs --clients >= 2"
    other, _ = build_config({"dataset": "purchase"}, [], texas)  # an explicit option beats the recipe
    assert (other.dataset, other.lam) == ("purchase", 25.0)
    by_set, source = build_config({}, ["dataset=texas", "defense=sgd"], None)  # --set picks the shipped recipe
    assert source == default_recipe("texas", "sgd") and by_set.clients == 1


def test_a_recipe_of_a_missing_dataset_names_that_dataset(tmp_path: Path) -> None:
    proc = _fedmist("simulate", "--recipe", str(default_recipe("texas", "mist").resolve()), "--epochs", "1",
                    "--data-dir", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "Texas100" in proc.stderr and "Traceback" not in proc.stderr
    assert "location" not in proc.stdout.lower()


def test_an_explicit_option_and_a_different_set_of_it_is_an_error(tmp_path: Path) -> None:
    proc = _fedmist("simulate", *TINY, "--set", "epochs=2", "--epochs", "1", "--out", str(tmp_path / "r"),
                    cwd=tmp_path)
    assert proc.returncode == 2 and "--epochs 1 conflicts with --set epochs=2" in proc.stderr


def test_variants_of_one_recipe_get_their_own_default_directories() -> None:
    recipe = default_recipe("location", "mist")
    plain = prepare_config(build_config({}, [], recipe)[0])
    fixed = prepare_config(build_config({"repartition": "fixed"}, [], recipe)[0])
    private = prepare_config(build_config({"mode": "private"}, [], recipe)[0])
    dirs = {tagged_out(c, recipe) for c in (plain, fixed, private)}
    assert len(dirs) == 3 and tagged_out(plain, recipe) == Path("runs/location-mist-c4-s0")
    assert tagged_out(fixed, recipe) == tagged_out(prepare_config(build_config({"repartition": "fixed"}, [], recipe)[0]),
                                                   recipe)  # deterministic: a rerun finds it


def test_resume_needs_only_the_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = prepare_config(build_config({}, [*_sets(TINY), "epochs=2", "mode=private"], None)[0])
    run = open_run(cfg, out)
    from fedmist.engine.loop import run_epoch
    state, rep = run_epoch(cfg, run.spec, InProcessFederation(), run.state, run.split.members, 1)
    run.on_epoch(state, rep)  # epoch 1 checkpointed, then the process "died"
    proc = _fedmist("simulate", "--out", str(out), "--resume", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming at epoch 2" in proc.stdout and "its saved config.json" in proc.stdout
    assert [h["epoch"] for h in json.loads((out / "metrics.json").read_text())["history"]] == [1, 2]
    bad = _fedmist("simulate", "--resume", cwd=tmp_path)
    assert bad.returncode == 2 and "--out DIR --resume" in bad.stderr


def _sets(args: list[str]) -> list[str]:
    """TINY's options as --set items (for build_config)."""
    return [f"{k.lstrip('-')}={v}" for k, v in zip(args[::2], args[1::2])]


def test_ctrl_c_stops_within_seconds_keeps_the_checkpoint_and_prints_the_resume_command(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fedmist", "simulate", *TINY, "--epochs", "400", "--out", str(out)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 180
        while not (out / "checkpoint.pt").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the deadline"
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        t0 = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert took < 10, f"took {took:.1f} s to stop"
    assert "Traceback" not in stdout + stderr and "ActorDiedError" not in stdout + stderr
    assert f"fedmist simulate --out {out} --resume" in stderr
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] >= 1 and len(ckpt["history"]) == ckpt["epoch"]
    assert not (out / "model.pt").exists()


def test_a_study_reuses_a_run_only_when_its_config_equals_the_request(tmp_path: Path) -> None:
    cfg = _trained(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="sgd", epochs=2,
                             batch_size=20, train_size=120), tmp_path / "cell")
    assert check_reuse(cfg, tmp_path / "cell") == []
    assert check_reuse(cfg, tmp_path / "empty") == []
    import dataclasses
    three = dataclasses.replace(cfg, epochs=3)
    with pytest.raises(RunDirError, match="epochs: saved 2 vs now 3"):
        check_reuse(three, tmp_path / "cell")
    assert check_reuse(three, tmp_path / "cell", force=True) == ["epochs: saved 2 vs now 3"]
    moved = dataclasses.replace(cfg, device="cpu", data_dir="/elsewhere", eval_every=5)  # not training fields
    assert check_reuse(moved, tmp_path / "cell") == []


def test_compare_refuses_a_cell_trained_with_another_config(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    _trained(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="sgd", epochs=2, batch_size=20,
                       train_size=120, clients=1, seed=0), out / "runs" / "synthetic-240x12x3-sgd-s0")
    args = ["compare", "--dataset", "synthetic:240x12x3", "--defenses", "sgd", "--attacks", "loss", "--shadows", "0",
            "--model", "mlp-small", "--batch-size", "20", "--train-size", "120", "--out", str(out)]
    proc = _fedmist(*args, "--set", "epochs=3", cwd=tmp_path)
    assert proc.returncode == 2 and "epochs: saved 2 vs now 3" in proc.stderr, proc.stderr[-2000:]
    assert "--force" in proc.stderr and not (out / "compare.csv").exists()


def test_compare_fl_refuses_a_row_trained_with_another_config(tmp_path: Path) -> None:
    out = tmp_path / "fl"
    _trained(RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="sgd", mode="fl", clients=3,
                       rounds=2, epochs=2, batch_size=20, train_size=120, record_updates=True), out / "runs" / "fedavg")
    proc = _fedmist("compare", "--mode", "fl", "--dataset", "synthetic:240x12x3", "--defenses", "sgd",
                    "--model", "mlp-small", "--batch-size", "20", "--train-size", "120", "--clients", "3",
                    "--rounds", "3", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and "rounds: saved 2 vs now 3" in proc.stderr, proc.stderr[-2000:]


def test_an_audit_is_reused_only_with_the_same_settings_and_model(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"m")
    audit = tmp_path / "audit.json"
    time.sleep(0.01)
    audit.write_text(json.dumps({"audit": {"n_shadows": 4, "seed": 0, "bootstrap": 200, "attacks": ["loss", "rmia"]}}))
    wanted = {"n_shadows": 4, "seed": 0, "bootstrap": 200}
    assert audit_is_current(audit, model, wanted, ["loss"])
    assert not audit_is_current(audit, model, wanted, ["loss", "lira_online"])  # more attacks: audit again
    with pytest.raises(RunDirError, match="n_shadows: saved 4 vs now 8"):
        audit_is_current(audit, model, {**wanted, "n_shadows": 8}, ["loss"])
    assert not audit_is_current(audit, model, {**wanted, "n_shadows": 8}, ["loss"], force=True)
    os.utime(model, (time.time() + 5, time.time() + 5))  # the model was retrained after the audit
    assert not audit_is_current(audit, model, wanted, ["loss"])


def test_a_second_comparison_into_the_same_directory_is_refused(tmp_path: Path) -> None:
    from fedmist.cli.compare import claim_output

    claim_output(tmp_path / "compare.json", {"defenses": ["sgd", "mist"]}, force=False)
    claim_output(tmp_path / "compare.json", {"defenses": ["sgd", "mist"]}, force=False)  # the same: fine
    with pytest.raises(RunDirError, match="another comparison"):
        claim_output(tmp_path / "compare.json", {"defenses": ["hamp"]}, force=False)
    claim_output(tmp_path / "compare.json", {"defenses": ["hamp"]}, force=True)
