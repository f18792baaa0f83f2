"""`fedmist compare --mode fl`: which rows train with what, and the table / plot it writes."""

from __future__ import annotations

import csv

import pytest

from fedmist.errors import ConfigError
from fedmist.fl_compare import plan, write_outputs


def test_dp_settings_reach_only_the_dp_row() -> None:
    rows = plan(["fedavg", "mist", "dpfedavg"], {"clients": "10", "fl_dp_noise": "0.3", "partition": "iid"})
    by = {name: (defense, sets) for name, defense, sets in rows}
    assert by["fedavg"] == ("sgd", {"clients": "10", "partition": "iid"})
    assert by["mist"] == ("mist", {"clients": "10", "partition": "iid"})
    assert by["dpfedavg"][0] == "sgd" and by["dpfedavg"][1]["fl_dp_noise"] == "0.3"
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
