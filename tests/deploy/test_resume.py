"""Kill the server mid-run (SIGKILL on `fedmist simulate`), rerun the same command with --resume:
it continues from the last completed epoch and ends with the weights of an uninterrupted run."""

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

from fedmist.config import RunConfig
from fedmist.runs.inprocess import InProcessFederation
from fedmist.engine.loop import train
from fedmist.runs.rundir import open_run, prepare_config

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["simulate", "--dataset", "synthetic:240x12x3", "--model", "mlp-small", "--clients", "3", "--epochs", "4",
        "--lambda", "5", "--batch-size", "20", "--train-size", "120", "--seed", "11"]


@pytest.mark.slow  # ~90 s here: two `fedmist simulate` processes (the in-process resume is in tests/test_simulate.py)
def test_kill_and_resume_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fedmist", *ARGS, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint.pt").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint written"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)  # the server dies between epochs, as in a crash
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "model.pt").exists()
    done = torch.load(out / "checkpoint.pt", weights_only=False)["epoch"]
    assert 1 <= done < 4
    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at epoch {done + 1}" in resumed.stdout

    cfg = prepare_config(RunConfig.from_dict(json.loads((out / "config.json").read_text())))
    run = open_run(cfg, None)
    expected = train(cfg, run.spec, InProcessFederation(), run.state, run.split.members)
    got = torch.load(out / "model.pt")
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)
