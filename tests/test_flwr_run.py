"""`flwr run .` runs the same ServerApp/ClientApp as `fedmist simulate` (valid Flower App)."""

from __future__ import annotations

import json
import time
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLWR = Path(sys.executable).with_name("flwr")


@pytest.mark.skipif(not FLWR.exists(), reason="flwr CLI not installed in this environment")
def test_flwr_run_trains_a_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    overrides = (f"out='{out}' force=true dataset='synthetic:240x12x3' clients=3 epochs=2 lambda=5.0 "
                 "seed=3 batch-size=20")
    output = _flwr_run(tmp_path, 3, overrides, timeout=240)
    assert (out / "model.pt").is_file(), output[-3000:]
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["dataset"], cfg["clients"], cfg["epochs"], cfg["lam"], cfg["seed"]) == ("synthetic:240x12x3", 3, 2, 5.0, 3)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2] and history[0]["xdiff_loss"] is not None


def _flwr_run(tmp_path: Path, supernodes: int, overrides: str, timeout: float) -> str:
    """``flwr run . --stream`` on a local federation of ``supernodes`` simulated SuperNodes; its output."""
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
        f"options.num-supernodes = {supernodes}\noptions.backend.client-resources.num-cpus = 1\n")
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    proc = subprocess.Popen([str(FLWR), "run", ".", "--run-config", overrides, "--stream"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        # `flwr run` with a :local: SuperLink leaves a detached flower-superlink behind: stop it.
        _stop_superlink(home)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    return output


def _stop_superlink(home: Path) -> None:
    pattern = f"flower-superlink.*{home}"
    subprocess.run(["pkill", "-TERM", "-f", pattern], check=False)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode != 0:
            return
        time.sleep(0.5)
    subprocess.run(["pkill", "-KILL", "-f", pattern], check=False)


@pytest.mark.skipif(not FLWR.exists(), reason="flwr CLI not installed in this environment")
def test_flwr_run_on_a_too_small_federation_says_how_many_supernodes_it_needs(tmp_path: Path) -> None:
    """Flower's default local federation is smaller than MIST's 4 clients: one line, within seconds."""
    overrides = f"out='{tmp_path / 'run'}' dataset='synthetic:240x12x3' clients=3 epochs=1 node-wait=3"
    t0 = time.monotonic()
    output = _flwr_run(tmp_path, 2, overrides, timeout=180)
    assert "error: the federation has 2 SuperNode(s)" in output and "needs 3" in output, output[-3000:]
    assert "options.num-supernodes = 3" in output
    assert "Traceback" not in output
    assert time.monotonic() - t0 < 120
