"""The report files: present, parseable, and consistent with the metrics."""

import csv
import json

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from fedmist.audit.metrics import roc_metrics
from fedmist.audit.report import build_report, format_report, write_report


@pytest.fixture
def audit():
    rng = np.random.default_rng(0)
    is_member = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    scores = {"strong": rng.normal(size=400) + 2 * is_member, "weak": rng.normal(size=400) + 0.3 * is_member,
              "random": rng.normal(size=400)}
    vulnerable = np.arange(20)  # the first 20 members
    return scores, is_member, vulnerable


def test_build_report(audit):
    scores, is_member, vulnerable = audit
    rep = build_report(scores, is_member, vulnerable, fprs=(0.01,), n_bootstrap=10)
    assert rep["fprs"] == [0.001, 0.01]  # the headline FPR is always reported
    assert rep["attacks"]["strong"]["full"] == roc_metrics(scores["strong"], is_member, (0.001, 0.01), 10, 0)
    # vulnerable subset: its members against all non-members
    vul = rep["attacks"]["weak"]["vulnerable"]
    assert vul["n_members"] == 20 and vul["n_nonmembers"] == 200
    sub = np.r_[np.arange(20), np.arange(200, 400)]
    assert vul["auc"] == pytest.approx(roc_metrics(scores["weak"][sub], is_member[sub], n_bootstrap=0)["auc"])
    best = max(scores, key=lambda a: rep["attacks"][a]["full"]["at_fpr"]["0.001"]["plr"])
    assert rep["headline"]["attack"] == best
    assert rep["headline"]["plr"] == rep["attacks"][best]["full"]["at_fpr"]["0.001"]["plr"]
    assert rep["headline_vulnerable"] is not None and rep["vulnerable_subset"]["size"] == 20
    assert build_report(scores, is_member, n_bootstrap=0)["vulnerable_subset"] is None


def test_write_report(tmp_path, audit):
    scores, is_member, vulnerable = audit
    rep = build_report(scores, is_member, vulnerable, n_bootstrap=10)
    paths = write_report(tmp_path, rep, scores, is_member, {"indices": np.arange(400)})
    assert sorted(p.name for p in paths.values()) == ["audit.csv", "audit.json", "roc.png", "roc_linear.png",
                                                       "scores.npz"]
    assert all(p.stat().st_size > 0 for p in paths.values())
    back = json.loads((tmp_path / "audit.json").read_text())
    assert {"format", "n_examples", "n_members", "n_nonmembers", "fprs", "attacks", "headline",
            "headline_vulnerable", "vulnerable_subset"} <= set(back)
    assert set(back["attacks"]["weak"]["full"]) == {"auc", "auc_ci", "n_members", "n_nonmembers",
                                                   "fpr_resolution", "at_fpr"}
    assert set(back["attacks"]["weak"]["full"]["at_fpr"]["0.001"]) == {
        "fpr", "tpr", "tpr_ci", "plr", "plr_ci", "max_false_positives"}
    with open(tmp_path / "audit.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["attack"] for r in rows] == ["strong", "weak", "random"]
    assert float(rows[0]["plr@0.01"]) == pytest.approx(rep["attacks"]["strong"]["full"]["at_fpr"]["0.01"]["plr"])
    assert float(rows[1]["vul_auc"]) == pytest.approx(rep["attacks"]["weak"]["vulnerable"]["auc"])
    assert {"tpr@0.001_lo", "tpr@0.001_hi", "plr@0.001_lo", "plr@0.001_hi", "vul_plr@0.01"} <= set(rows[0])
    with np.load(tmp_path / "scores.npz") as z:
        assert z["attacks"].tolist() == ["strong", "weak", "random"]
        assert np.array_equal(z["is_member"], is_member)
        assert np.array_equal(z["score_weak"], scores["weak"])
        assert np.array_equal(z["indices"], np.arange(400))


def test_format_report(audit):
    scores, is_member, vulnerable = audit
    table = format_report(build_report(scores, is_member, vulnerable, n_bootstrap=5))
    assert isinstance(table, Table) and table.row_count == 3
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "highest PLR@0.1%" in text and "allows 0 false positives of 200" in text
