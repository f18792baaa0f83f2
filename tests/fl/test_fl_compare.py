"""`fedmist compare --mode fl`: which rows train with what, and the table / plot it writes."""

from __future__ import annotations

import csv

import pytest

from fedmist.errors import ConfigError
from fedmist.studies.fl_compare import plan, write_outputs


def test_dp_settings_reach_only_the_dp_row() -> None:
    rows = plan(["fedavg", "mist", "dpfedavg"], {"clients": "10", "fl_dp_noise": "0.3", "partition": "iid"})
    by = {name: (defense, sets) for name, defense, sets in rows}
    assert by["fedavg"] == ("fedavg", {"clients": "10", "partition": "iid"})
    assert by["mist"] == ("mist", {"clients": "10", "partition": "iid"})
    assert by["dpfedavg"][0] == "dpfedavg" and by["dpfedavg"][1]["fl_dp_noise"] == "0.3"
    assert by["dpfedavg"][1]["fl_dp_clip"] == "1.0"  # the default clipping norm
    with pytest.raises(ConfigError, match="--mode fl compares"):
        plan(["selena"], {})


def test_table_and_plot(tmp_path) -> None:
    rows = []
    for i, name in enumerate(("FedAvg", "MIST-in-FL", "DP-FedAvg")):
        row = {"row": name, "partition": "iid", "rounds": 3, "test_acc": 0.5, "epsilon": float("nan"),
               "train_s": 1.0, "record_mb": 2.0, "record_s": 0.1}
        for t in ("server", "client", "outsider"):
            row.update({f"{t}_auc": 0.6 + i / 10, f"{t}_tpr_0.1": 0.01, f"{t}_plr_0.1": 10.0 * (i + 1)})
        rows.append(row)
    rows[2]["epsilon"] = float("inf")
    write_outputs(rows, tmp_path, "# header")
    md = (tmp_path / "compare-fl.md").read_text()
    assert md.startswith("# header") and "| DP-FedAvg | iid | 3 | 0.500 | ∞ |" in md
    with open(tmp_path / "compare-fl.csv") as fh:
        got = list(csv.DictReader(fh))
    assert [r["row"] for r in got] == ["FedAvg", "MIST-in-FL", "DP-FedAvg"] and got[1]["server_plr_0.1"] == "20.0"
    assert (tmp_path / "compare-fl.png").stat().st_size > 1000


def test_compare_fl_end_to_end_then_reuses_finished_rows(tmp_path) -> None:
    """Real subprocesses: three FL trainings with recorded updates, three threat audits each."""
    import json
    import subprocess
    import sys

    out = tmp_path / "cmp"
    args = [sys.executable, "-m", "fedmist", "compare", "--mode", "fl", "--dataset", "synthetic:240x12x3",
            "--defenses", "fedavg,mist,dpfedavg", "--out", str(out), "--bootstrap", "10",
            "--set", "clients=3", "--set", "rounds=2", "--set", "model=mlp-small", "--set", "batch_size=20",
            "--set", "train_size=120", "--set", "lambda=5", "--set", "fl_dp_noise=0.5"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(out / "compare-fl.csv") as fh:
        got = {r["row"]: r for r in csv.DictReader(fh)}
    assert sorted(got) == ["DP-FedAvg", "FedAvg", "MIST-in-FL"]
    for row in got.values():
        assert row["rounds"] == "2"
        for threat in ("server", "client", "outsider"):
            assert 0.0 <= float(row[f"{threat}_auc"]) <= 1.0
    assert float(got["DP-FedAvg"]["epsilon"]) > 0 and got["FedAvg"]["epsilon"] in ("", "nan")
    for name in ("fedavg", "mist", "dpfedavg"):  # every threat's report, from the recorded run
        run_dir = out / "runs" / name
        assert {"audit.json", "audit-server.json", "audit-client0.json"} <= {p.name for p in run_dir.iterdir()}
        assert json.loads((run_dir / "metrics.json").read_text())["summary"]["fl"]["rounds"] == 2
    assert (out / "compare-fl.png").stat().st_size > 1000
    mtime = (out / "runs" / "mist" / "model.pt").stat().st_mtime
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "runs" / "mist" / "model.pt").stat().st_mtime == mtime  # reused, not retrained
    assert (out / "logs" / "mist.log").read_text().count("$ fedmist simulate") == 1
