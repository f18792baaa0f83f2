"""`fedmist compare` and `fedmist tune`: table arithmetic, cell planning, and end-to-end runs."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fedmist.studies.compare import aggregate, markdown_table, plan_cells
from fedmist.errors import ConfigError
from fedmist.studies.tune import Knob, bisect_strongest, write_recipe

TINY = ["--set", "model=mlp-small", "--set", "epochs=2", "--set", "batch_size=20", "--set", "train_size=120",
        "--bootstrap", "10"]


def _row(defense: str, seed: int, acc: float, plr: float, seconds: float, rss: float, auc: float = 0.6) -> dict:
    return {"defense": defense, "seed": seed, "test_acc": acc, "train_acc": 1.0, "train_seconds": seconds,
            "peak_rss_mb": rss, "epsilon": float("nan"), "n_shadows": 16, "plr_0.1": plr, "plr_0.1_attack": "loss",
            "plr_1": 1.0, "auc": auc}


def test_aggregate_means_over_seeds_and_ratios_against_sgd() -> None:
    rows = [_row("sgd", 0, 0.70, 10.0, 100.0, 1000.0, auc=0.80), _row("sgd", 1, 0.74, 14.0, 100.0, 1000.0, auc=0.84),
            _row("mist", 0, 0.70, 2.0, 250.0, 1500.0)]
    table = {t["defense"]: t for t in aggregate(rows)}
    assert table["sgd"]["test_acc"] == pytest.approx(0.72) and table["sgd"]["test_acc_std"] == pytest.approx(0.02)
    assert table["sgd"]["plr_0.1"] == pytest.approx(12.0) and table["sgd"]["seeds"] == 2
    assert table["mist"]["acc_drop"] == pytest.approx(0.02)
    assert table["mist"]["time_x_sgd"] == pytest.approx(2.5) and table["mist"]["mem_x_sgd"] == pytest.approx(1.5)
    assert table["mist"]["paper_time_x_sgd"] == pytest.approx(2139 / 1195)
    md = markdown_table(list(table.values()))
    assert table["sgd"]["auc"] == pytest.approx(0.82) and table["sgd"]["auc_std"] == pytest.approx(0.02)
    assert "| mist | 70.00 | +2.00 | 2.00 (loss)" in md and "72.00 ± 2.00" in md
    assert "| 0.820 ± 0.020 |" in md and "| 0.600 |" in md  # a one-seed row shows no spread


def test_plan_cells_refuses_unknown_and_impossible_defenses(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown defense"):
        plan_cells("synthetic", ["sgd", "nope"], [0], tmp_path)
    with pytest.raises(ConfigError, match="mist.*cannot run on synthetic"):
        plan_cells("synthetic", ["mist"], [0], tmp_path, overrides={"clients": "1"})
    cells = plan_cells("synthetic", ["sgd", "mist"], [0, 1], tmp_path)
    assert [c.name for c in cells] == ["sgd-s0", "sgd-s1", "mist-s0", "mist-s1"]
    assert len({c.run_dir for c in cells}) == 4


def test_tuned_recipe_round_trips(tmp_path: Path) -> None:
    from fedmist.config import RunConfig

    cfg = RunConfig(dataset="location", defense="mist", clients=3, lam=3.5, lr_schedule=[50, 75],
                    params={})
    write_recipe(cfg, tmp_path / "r.toml", "chosen by a test")
    back = RunConfig.from_toml(tmp_path / "r.toml")
    assert (back.clients, back.lam, back.lr_schedule, back.defense) == (3, 3.5, [50, 75], "mist")


def test_bisection_finds_the_boundary_of_a_monotone_budget() -> None:
    calls: list[float] = []

    def ok(v: float) -> bool:
        calls.append(v)
        return v <= 6.0

    value, found = bisect_strongest(Knob("lam", 0.5, 64.0), ok, iterations=6)
    assert found and value <= 6.0 and value > 6.0 / (128 ** (1 / 2 ** 6)) ** 1.01
    assert calls[:2] == [64.0, 0.5] and len(calls) == 8


def _fedmist(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedmist", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def test_compare_end_to_end_then_reuses_finished_cells(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "--dataset", "synthetic:240x12x3", "--defenses", "sgd,mist", "--attacks", "loss,lira_offline_fixed",
            "--shadows", "4", "--out", str(out), "--set", "clients=3", "--set", "lambda=5", *TINY]
    proc = _fedmist(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in ("compare.csv", "compare.md", "tradeoff.png"):
        assert (out / name).is_file()
    md = (out / "compare.md").read_text()
    assert "| sgd |" in md and "| mist |" in md
    audit = json.loads((out / "runs" / "synthetic-240x12x3-mist-s0" / "audit.json").read_text())
    assert audit["audit"]["n_shadows"] == 4
    mtime = (out / "runs" / "synthetic-240x12x3-mist-s0" / "model.pt").stat().st_mtime
    again = _fedmist(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "runs" / "synthetic-240x12x3-mist-s0" / "model.pt").stat().st_mtime == mtime
    log = (out / "logs" / "synthetic-240x12x3-mist-s0.log").read_text()
    assert log.count("$ fedmist simulate") == 1 and log.count("$ fedmist attack") == 1


RAY_CURRENT_CLUSTER = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("ray") is None and not (Path(sys.executable).parent / "ray").exists(),
                    reason="ray CLI not installed")
def test_compare_runs_on_an_existing_ray_cluster(tmp_path: Path) -> None:
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    port = _free_port()
    before = RAY_CURRENT_CLUSTER.read_text() if RAY_CURRENT_CLUSTER.is_file() else None
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    head = subprocess.Popen([ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        time.sleep(8)
        assert head.poll() is None, head.stdout.read() if head.stdout else ""
        out = tmp_path / "cmp"
        proc = _fedmist("compare", "--dataset", "synthetic:240x12x3", "--defenses", "sgd", "--attacks", "loss",
                        "--shadows", "2", "--shadow-engine", "flower", "--out", str(out),
                        "--ray-address", f"127.0.0.1:{port}", *TINY, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        log = (out / "logs" / "synthetic-240x12x3-sgd-s0.log").read_text()
        assert "$ fedmist simulate" in log and (out / "compare.md").is_file()
    finally:
        os.killpg(head.pid, 15)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        _forget_cluster(before)


def _forget_cluster(before: str | None) -> None:
    """`ray start --head` records its address in ``RAY_CURRENT_CLUSTER`` (ray/ray_current_cluster in
    the system temp directory) and leaves it there after the head stops; a later plain `ray.init()`
    (Flower's own simulation under `flwr run`) would then try to join the dead cluster and hang.
    Put the file back as it was."""
    if before is None:
        RAY_CURRENT_CLUSTER.unlink(missing_ok=True)
    else:
        RAY_CURRENT_CLUSTER.write_text(before)


def test_epsilon_column_is_dp_only():
    """The table's ε is a DP budget: DP-SGD's (reported with δ) shows, MemGuard's L1 distortion
    budget (old runs called it ``epsilon``) does not."""
    from fedmist.studies.compare import dp_epsilon

    assert dp_epsilon({"epsilon": 73.3, "delta": 1e-5, "noise_multiplier": 0.5}) == 73.3
    assert math.isnan(dp_epsilon({"epsilon": 1.0, "defender_train_acc": 0.6}))
    assert math.isnan(dp_epsilon({}))
