"""``write_report`` on real directories: an audited run, a comparison, an FL threat study, the
committed Location comparison; numbers equal the files', every figure is there, nothing external."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from fedmist.config import RunConfig
from fedmist.errors import FedmistError, RunDirError
from fedmist.report import write_report
from fedmist.report.page import detect_kind
from fedmist.report.sections import roc_points, simulate_command, tpr_at

from .pagecheck import Page, assert_audit_tables_equal, read_page


def assert_self_contained(html: str, page: Page) -> None:
    assert not [r for r in page.refs if not r.startswith("#")], page.refs  # in-page anchors only
    low = html.lower()
    for bad in ("http://", "https://", "<script", "<link", "<img", "<iframe", "@import", "url(http", "src="):
        assert bad not in low, bad


def report_of(path: Path, out: Path | None = None) -> tuple[str, Page]:
    written = write_report(path, out)
    html = written.read_text(encoding="utf-8")
    return html, read_page(html)


def test_audited_run(audited_run: Path) -> None:
    out = write_report(audited_run)
    assert out == audited_run / "report.html"
    html = out.read_text(encoding="utf-8")
    page = read_page(html)
    assert_self_contained(html, page)
    report = json.loads((audited_run / "audit.json").read_text())
    assert report["vulnerable_subset"] is not None  # four shadows rank a most vulnerable subset
    assert assert_audit_tables_equal(page, report) == 3 * 2 * 5  # attacks × subsets × (AUC, TPR, PLR at 2 FPRs)
    assert [f["data-figure"] for f in page.figures] == ["accuracy", "loss", "roc", "roc-vulnerable"]
    assert "Most vulnerable subset" in page.text and report["vulnerable_subset"]["source"] in page.text
    assert f"{report['headline']['plr']:.2f}" in page.text
    for attack in report["attacks"]:  # one ROC curve per attack, in the legend too
        assert html.count(f'data-series="{attack}"') == 2
    config = json.loads((audited_run / "config.json").read_text())
    assert f"--set seed={config['seed']}" in page.text and "fedmist attack" in page.text
    assert "--shadows 4" in page.text and re.search(r"fedmist version\s*0\.\d", page.text)


def test_roc_points_agree_with_audit_json(audited_run: Path) -> None:
    """The drawn ROC is the one audit.json's TPRs come from: the TPR at each target FPR read off it is equal."""
    report = json.loads((audited_run / "audit.json").read_text())
    with np.load(audited_run / "scores.npz") as z:
        is_member = z["is_member"].astype(bool)
        for name, res in report["attacks"].items():
            f, t = roc_points(z[f"score_{name}"], is_member)
            assert f[0] == t[0] == 0.0 and f[-1] == t[-1] == 1.0 and (np.diff(f) >= 0).all()
            for key, p in res["full"]["at_fpr"].items():
                assert tpr_at(f, t, float(key)) == p["tpr"], (name, key)


def test_simulate_command_rebuilds_the_config(audited_run: Path, tmp_path: Path) -> None:
    for config in (json.loads((audited_run / "config.json").read_text()),
                   RunConfig.from_dict({"lambda": 3, "seed": 2, "epochs": 7},
                                       base=RunConfig.from_toml(Path(__file__).resolve().parents[2] / "fedmist"
                                                                / "recipes" / "location-mist.toml")).to_dict()):
        args = simulate_command(config, tmp_path / "run")
        assert args[:2] == ["fedmist", "simulate"] and args[-2:] == ["--out", str(tmp_path / "run")]
        recipe = Path(args[args.index("--recipe") + 1]) if "--recipe" in args else None
        sets = dict(a.split("=", 1) for a in args[3::2] if "=" in a) if recipe is None else \
            dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set")
        base = RunConfig.from_toml(recipe) if recipe else RunConfig()
        rebuilt = RunConfig.from_dict(sets, base=base).to_dict()
        assert {k: v for k, v in rebuilt.items() if k != "data_dir"} == \
               {k: v for k, v in config.items() if k != "data_dir"}
    assert recipe is not None and recipe.name == "location-mist.toml"
    assert sets == {"dataset": "location", "defense": "mist", "seed": "2", "lambda": "3.0", "epochs": "7"}


def test_comparison(compare_dir: Path, tmp_path: Path) -> None:
    assert detect_kind(compare_dir) == "compare"
    html, page = report_of(compare_dir, tmp_path / "cmp.html")
    assert_self_contained(html, page)
    assert [f["data-figure"] for f in page.figures] == ["tradeoff", "roc-cells"]
    with open(compare_dir / "compare.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["defense"] for r in rows} == {"sgd", "mist"}
    for r in rows:
        assert page.values[f"compare/{r['defense']}/plr_0.1"] == float(r["plr_0.1"])
    for cell in (compare_dir / "runs").iterdir():
        head = json.loads((cell / "audit.json").read_text())["headline"]
        assert page.values[f"cell/{cell.name}/plr_0.1"] == head["plr"]
    assert page.text.count("$ fedmist") == 0 and page.text.count("fedmist simulate") == 2  # from the logs
    assert "fedmist compare --dataset synthetic:240x12x3 --defenses sgd,mist" in page.text
    assert html.count('class="point"') == 2


def test_location_comparison_shows_the_papers_numbers(location_compare_dir: Path) -> None:
    html, page = report_of(location_compare_dir)
    assert_self_contained(html, page)
    assert [f["data-figure"] for f in page.figures] == ["tradeoff"]
    assert page.values["compare/sgd/plr_0.1"] == 145.54455445544554
    row = re.search(r"<th>mist</th>(.*?)</tr>", html).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert "28.71" in cells[2] and cells[3] == "1.15" and cells[9] == "1.79" and cells[11] == "4"  # ours | paper
    assert "location" in page.text and html.count('class="point"') == 9


def test_fl_threat_study(fl_dir: Path, tmp_path: Path) -> None:
    assert detect_kind(fl_dir) == "fl-compare"
    html, page = report_of(fl_dir, tmp_path / "fl.html")
    assert_self_contained(html, page)
    assert [f["data-figure"] for f in page.figures] == ["fl-threats"]
    with open(fl_dir / "compare-fl.csv") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for threat in ("server", "client", "outsider"):
            assert page.values[f"fl/{r['row']}/{threat}/plr_0.1"] == float(r[f"{threat}_plr_0.1"])
    assert "fedmist attack" in page.text and "--threat server" in page.text  # the logged commands


def test_fl_run_with_threat_audits(fl_dir: Path, tmp_path: Path) -> None:
    run = fl_dir / "runs" / "mist"
    html, page = report_of(run, tmp_path / "mist.html")
    assert_self_contained(html, page)
    suffixes = {"": "audit.json", "-server": "audit-server.json", "-client0": "audit-client0.json",
                "-client0-peerleak": "audit-client0-peerleak.json"}
    for suffix, name in suffixes.items():
        assert_audit_tables_equal(page, json.loads((run / name).read_text()), "audit" + suffix)
    figs = [f["data-figure"] for f in page.figures]
    assert figs[:2] == ["accuracy", "loss"] and {f"roc{s}" for s in suffixes} <= set(figs)
    commands = [line for line in page.text.splitlines() if line.startswith("fedmist attack")]
    assert any("--threat server" in c for c in commands) and any("--threat client:0" in c for c in commands)
    assert sum("--threat client:0" in c for c in commands) == 1  # peerleak comes from the same command
    assert "--set mode=fl" in page.text


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="holds no run, audit or comparison"):
        write_report(tmp_path)
    with pytest.raises(RunDirError, match="does not exist"):
        write_report(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        write_report(tmp_path / "f.txt")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(RunConfig().to_json())
    with pytest.raises(RunDirError, match="no metrics.json"):
        write_report(run)
    (run / "metrics.json").write_text("{not json")
    with pytest.raises(FedmistError, match="cannot read"):
        write_report(run)
    for err in (RunDirError,):
        assert "\n" not in str(err("x"))


def test_text_is_escaped_and_a_run_without_audit_works(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    evil = '<script>alert("x")</script>'
    (run / "config.json").write_text(json.dumps({**RunConfig(seed=3).to_dict(), "dataset": evil}))
    (run / "metrics.json").write_text(json.dumps({
        "summary": {"train_acc": 0.9, "test_acc": 0.7, "defense": {"note": evil}},
        "history": [{"epoch": e, "local_loss": 1 / e, "xdiff_loss": None, "train_acc": 0.5 + e / 20,
                     "test_acc": 0.5 + e / 40} for e in range(1, 5)]}))
    html, page = report_of(run)
    assert "<script" not in html and "&lt;script&gt;" in html
    assert [f["data-figure"] for f in page.figures] == ["accuracy", "loss"]
    assert detect_kind(run) == "run" and "Audit" not in page.text
    assert shlex.quote(f"dataset={evil}") in page.text  # the rerun command quotes it for the shell
