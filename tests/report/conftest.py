"""Real artefacts for the report tests, made by the ``fedmist`` commands themselves (subprocesses,
as ``fedmist compare`` runs its cells): a comparison of two defenses whose cells are trained and
audited runs, and an FL threat study whose runs carry server / participant / outsider audits.
Tiny: 240 synthetic rows, an MLP, two epochs, four shadows; about two minutes on two cores.

"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "runs" / "report-artifacts"
TINY = ["--set", "model=mlp-small", "--set", "batch_size=20", "--set", "train_size=120", "--set", "clients=3",
        "--set", "lambda=5", "--bootstrap", "20"]


def fedmist(*args: str, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "fedmist", *args], check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="session")
def compare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fedmist compare`` of SGD and MIST: compare.csv/.md, logs/, runs/<cell>/ with audit.json and scores.npz."""
    base = tmp_path_factory.mktemp("report-compare")
    out = base / "cmp"
    fedmist("compare", "--dataset", "synthetic:240x12x3", "--defenses", "sgd,mist", "--attacks", "loss,lira_online,rmia",
            "--shadows", "4", "--shadow-engine", "inprocess", "--out", str(out), "--set", "epochs=3", *TINY, cwd=base)
    return out


@pytest.fixture(scope="session")
def audited_run(compare_dir: Path) -> Path:
    """A trained and audited run directory (the SGD cell): config.json, metrics.json, audit.json, scores.npz."""
    return compare_dir / "runs" / "synthetic-240x12x3-sgd-s0"


@pytest.fixture(scope="session")
def fl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fedmist compare --mode fl`` of FedAvg and MIST-in-FL: compare-fl.csv/.md and runs/<row>/ with
    audit.json, audit-server.json, audit-client0.json (and MIST's audit-client0-peerleak.json)."""
    base = tmp_path_factory.mktemp("report-fl")
    out = base / "cmpfl"
    fedmist("compare", "--mode", "fl", "--dataset", "synthetic:240x12x3", "--defenses", "fedavg,mist", "--out", str(out),
            "--set", "rounds=2", *TINY, cwd=base)
    return out


@pytest.fixture(scope="session")
def location_compare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed Location comparison (experiments/results/location-compare-s0.*) as a compare
    directory: compare.csv and compare.md only, its runs are not in the repository."""
    out = tmp_path_factory.mktemp("report-location") / "location-compare-s0"
    out.mkdir()
    shutil.copy(ROOT / "experiments" / "results" / "location-compare-s0.csv", out / "compare.csv")
    shutil.copy(ROOT / "experiments" / "results" / "location-compare-s0.md", out / "compare.md")
    return out
