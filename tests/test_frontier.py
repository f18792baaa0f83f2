"""fedmist frontier end to end on a tiny synthetic set: every point trained and audited once,
matched-member SGD, shadow audits where the band allows, verdicts, and a rerun that reuses all."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from fedmist.studies.frontier import plan_points

TINY = ["--dataset", "synthetic:240x12x3", "--model", "mlp-small", "--train-size", "120", "--batch-size", "20",
        "--epochs", "2"]


def _fedmist(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedmist", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "COLUMNS": "200"})


def test_the_plan_has_sgd_matched_baselines_and_every_knob_value() -> None:
    plan = plan_points("location", ["mist", "mixup_mmd"], 3, [2, 4], {"epochs": "2"})
    names = [(p.defense, p.knob, p.value) for p in plan]
    assert names[0][0] == "sgd"
    assert [(d, k) for d, k, v in names if d.startswith("sgd-matched")] == [("sgd-matched-mixup_mmd", "reference_size")]
    assert [p for p in plan if p.defense == "sgd-matched-mixup_mmd"][0].overrides["reference_size"] == "matched:mixup_mmd"
    assert [v for d, k, v in names if d == "mist-c2"] == [0.25, 4.0, 64.0]
    assert [v for d, k, v in names if d == "mist-c4"] == [0.25, 4.0, 64.0]
    assert [k for d, k, v in names if d == "mixup_mmd"] == ["params.mmd_weight"] * 3
    assert all(p.overrides["epochs"] == "2" for p in plan)


def test_frontier_end_to_end_then_reuses_every_point(tmp_path: Path) -> None:
    out = tmp_path / "fr"
    args = ["frontier", *TINY, "--defenses", "mixup_mmd", "--points", "2", "--shadows", "4", "--bands", "1,100",
            "--shadow-engine", "inprocess", "--bootstrap", "20", "--out", str(out)]
    proc = _fedmist(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "frontier.csv")))
    assert [r["defense"] for r in rows] == ["sgd", "sgd-matched-mixup_mmd", "mixup_mmd", "mixup_mmd"]
    assert [r["value"] for r in rows[2:]] == ["0.05", "8.0"]
    assert all(r["n_shadows"] == "4" for r in rows)  # every point is within 100 points of SGD
    # the matched baseline trains on exactly the members MMD keeps
    import numpy as np
    dirs = {r["defense"] + r["value"]: Path(r["run_dirs"]) for r in rows}
    matched = np.load(dirs["sgd-matched-mixup_mmdnan"] / "split.npz")["members"]
    mmd = np.load(dirs["mixup_mmd0.05"] / "split.npz")["members"]
    assert np.array_equal(np.sort(matched), np.sort(mmd))
    assert len(matched) < len(np.load(dirs["sgdnan"] / "split.npz")["members"])
    matched_md = (out / "matched.md").read_text()
    assert "accuracy drop ≤ 1 points" in matched_md and "accuracy drop ≤ 100 points" in matched_md
    assert "**mixup_mmd**" in matched_md  # the only defense curve wins the widest band
    assert "Only mixup_mmd has a setting in this band." in matched_md
    assert (out / "frontier.png").stat().st_size > 0
    logs = {p: p.read_text() for p in (out / "logs").glob("*.log")}
    again = _fedmist(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.read_text() for p in (out / "logs").glob("*.log")} == logs  # nothing ran again
    other = _fedmist(*args[:-2], "--points", "3", "--out", str(out), cwd=tmp_path)
    assert other.returncode == 2 and "another comparison" in other.stderr
