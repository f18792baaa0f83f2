"""fedmist frontier end to end on a tiny synthetic set: every point trained and audited once,
matched-member SGD, shadow audits where the band allows, verdicts, and a rerun that reuses all."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest

from fedmist.errors import ConfigError
from fedmist.studies.frontier import plan_points, point_cells

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


def test_a_preset_recipe_names_the_curve_centres_the_grid_and_gets_its_matched_baseline(tmp_path: Path) -> None:
    preset = tmp_path / "location-advreg-mine.toml"
    preset.write_text('defense = "advreg"\nreference_size = 1234\n[params]\nalpha = 10.0\n')
    plan = plan_points("location", ["advreg", "mist"], 5, [2], {}, recipes={"advreg": preset},
                       values={"mist": [0.5, 2.0]})
    curves = [(p.defense, p.value, p.base) for p in plan]
    assert [v for d, v, b in curves if d == "advreg-mine"] == [2.5, 5.0, 10.0, 20.0, 40.0]  # 1/4..4 x the preset's
    assert {b for d, v, b in curves if d == "advreg-mine"} == {"advreg"}
    assert [v for d, v, b in curves if d == "mist-c2"] == [0.5, 2.0]  # the chosen values, not the grid
    matched = [p for p in plan if p.defense == "sgd-matched-advreg-mine"]
    assert len(matched) == 1 and matched[0].base == "sgd" and matched[0].recipe == preset
    cells = point_cells(matched[0], "location", [0], tmp_path)
    assert cells[0].config.defense == "sgd" and cells[0].config.reference_size == 1234
    (cell,) = point_cells([p for p in plan if p.defense == "advreg-mine"][0], "location", [3], tmp_path)
    assert (cell.config.defense, cell.config.params["alpha"], cell.config.reference_size, cell.seed) == \
        ("advreg", "2.5", 1234, 3)
    assert cell.run_dir.name == "location-advreg-mine-alpha2.5-s3"
    # a preset without a hold-out has no matched baseline; a name outside --defenses is refused
    plain = tmp_path / "location-mist-mine.toml"
    plain.write_text('defense = "mist"\nlam = 2.0\n')
    assert not [p for p in plan_points("location", ["mist"], 3, [4], {}, recipes={"mist": plain})
                if p.defense.startswith("sgd-matched")]
    assert [p.value for p in plan_points("location", ["mist"], 3, [4], {}, recipes={"mist": plain})[1:]] == \
        [0.5, 2.0, 8.0]
    with pytest.raises(ConfigError, match="not in --defenses"):
        plan_points("location", ["mist"], 3, [2], {}, values={"hamp": [1.0]})


def test_another_knob_of_a_defense_gets_a_curve_of_its_own() -> None:
    plan = plan_points("location", ["hamp"], 3, [2], {}, knobs={"hamp": "entropy_percentile"})
    swept = [p for p in plan if p.defense == "hamp-entropy_percentile"]
    assert [(p.knob, p.value) for p in swept] == [("params.entropy_percentile", v) for v in (0.05, 0.475, 0.9)]
    assert all(p.overrides["params.entropy_percentile"] == f"{p.value:g}" for p in swept)
    with pytest.raises(ConfigError, match="hamp's knobs are entropy_weight, entropy_percentile"):
        plan_points("location", ["hamp"], 3, [2], {}, knobs={"hamp": "gamma"})


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
    # --tables-only writes the tables from the cache and runs nothing
    (out / "frontier.md").unlink()
    only = _fedmist(*args, "--tables-only", cwd=tmp_path)
    assert only.returncode == 0, only.stderr[-3000:]
    assert "0 point(s) not yet run" in (out / "frontier.md").read_text()
    assert {p: p.read_text() for p in (out / "logs").glob("*.log")} == logs
    empty = _fedmist(*args[:-1], str(tmp_path / "empty"), "--tables-only", cwd=tmp_path)
    assert empty.returncode == 2 and "SGD's cells are not trained and audited yet" in empty.stderr, empty.stderr
    other = _fedmist(*args[:-2], "--points", "3", "--out", str(out), cwd=tmp_path)
    assert other.returncode == 2 and "another comparison" in other.stderr


def test_a_point_leaking_more_than_sgd_gets_its_confidence_spread(tmp_path: Path) -> None:
    from fedmist.studies.frontier import inversion_lines

    def run(name: str, members: np.ndarray, nonmembers: np.ndarray) -> str:
        d = tmp_path / name
        d.mkdir()
        np.savez(d / "scores.npz", is_member=np.r_[np.ones(len(members)), np.zeros(len(nonmembers))],
                 score_confidence=np.r_[members, nonmembers])
        return str(d)

    grid = np.linspace(0, 1, 101)
    rows = [{"defense": "sgd", "knob": "", "value": float("nan"), "auc": 0.70, "plr_0.1": 3.0,
             "run_dirs": run("sgd", np.ones(101), grid)},
            {"defense": "d", "knob": "params.x", "value": 1.0, "auc": 0.75, "plr_0.1": 2.0,
             "run_dirs": run("d", 0.5 + grid / 2, grid / 2) + ";other-seed"},
            {"defense": "e", "knob": "params.x", "value": 2.0, "auc": 0.60, "plr_0.1": 1.0, "run_dirs": ""}]
    text = "\n".join(inversion_lines(rows))
    assert "| sgd | 0.700 (0.700) | 3 | 1.000–1.000 (1.000) | 0.050–0.950 (0.500) |" in text
    assert "| d params.x = 1 | 0.750 (0.700) | 2 | 0.525–0.975 (0.750) | 0.025–0.475 (0.250) |" in text
    assert "| e " not in text  # below SGD's AUC: nothing to explain
    assert inversion_lines(rows[:1] + rows[2:]) == []
