"""fedmist tune end to end on a tiny synthetic set: k-fold validation shares, seeds averaged,
SGD on the members the defense keeps, and the refusal of a validation too small to resolve 1 point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np

TINY = ["--dataset", "synthetic:240x12x3", "--model", "mlp-small", "--train-size", "120", "--batch-size", "20",
        "--epochs", "2"]


def _fedmist(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedmist", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "COLUMNS": "200"})


def test_tune_averages_folds_and_compares_with_matched_member_sgd(tmp_path: Path) -> None:
    out = tmp_path / "t"
    args = ["tune", "mixup_mmd", *TINY, "--iterations", "1", "--seeds", "0", "--folds", "2",
            "--validation-fraction", "0.25", "--max-acc-drop", "50", "--out", str(out)]
    small = _fedmist(*args, cwd=tmp_path)  # 2 folds × 24 rows: far below 1,000 validation rows
    assert small.returncode == 2 and "validation rows" in small.stderr and "--folds" in small.stderr
    proc = _fedmist(*args, "--min-validation-rows", "40", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    base = out / "tune" / "synthetic-240x12x3-mixup_mmd"
    f0, f1 = (np.load(base / f"sgd-matched-s0-f{f}" / "split.npz") for f in (0, 1))
    assert len(f0["test"]) == len(f1["test"]) and not set(f0["test"]) & set(f1["test"])  # disjoint shares
    assert set(f0["test"]) <= set(f1["members"]) and set(f1["test"]) <= set(f0["members"])
    sgd_cfg = json.loads((base / "sgd-matched-s0-f0" / "config.json").read_text())
    mmd_dir = next(p for p in base.iterdir() if p.name.startswith("params.mmd_weight") and p.name.endswith("-f0"))
    mmd = np.load(mmd_dir / "split.npz")
    assert sgd_cfg["defense"] == "sgd" and sgd_cfg["reference_size"] == len(mmd["reference"]) > 0
    assert np.array_equal(np.sort(f0["members"]), np.sort(mmd["members"]))  # the same training rows
    result = json.loads((base / "tune.json").read_text())
    sgd_accs = [json.loads((base / f"sgd-matched-s0-f{f}" / "metrics.json").read_text())["summary"]["test_acc"]
                for f in (0, 1)]
    assert abs(result["sgd_val_acc"] - float(np.mean(sgd_accs))) < 1e-12
    recipe = tomllib.loads(Path(result["recipe"]).read_text())
    assert recipe["defense"] == "mixup_mmd" and "seed" not in recipe and "validation_fold" not in recipe


def test_hamp_tunes_its_label_entropy_after_its_reward_weight(tmp_path: Path) -> None:
    """HAMP has two strengths (DefenseSpec.tune_more): both are searched and both reach the recipe."""
    out = tmp_path / "t"
    proc = _fedmist("tune", "hamp", *TINY, "--iterations", "1", "--seeds", "0", "--validation-fraction", "0.25",
                    "--min-validation-rows", "20", "--max-acc-drop", "100", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    base = out / "tune" / "synthetic-240x12x3-hamp"
    result = json.loads((base / "tune.json").read_text())
    # A 100-point budget accepts each knob's strongest value at once, in order, the first one fixed.
    assert [(t["knob"], t["value"]) for t in result["trials"]] == [
        ("params.entropy_weight", 2.0), ("params.entropy_percentile", 0.9)]
    assert result["chosen"] == {"params.entropy_weight": "2", "params.entropy_percentile": "0.9"}
    assert (base / "params.entropy_weight=2-params.entropy_percentile=0.9-s0-f0" / "model.pt").is_file()
    assert (base / "tune-entropy_percentile.png").is_file()
    recipe = tomllib.loads(Path(result["recipe"]).read_text())
    assert recipe["params"]["entropy_weight"] == 2.0 and recipe["params"]["entropy_percentile"] == 0.9
