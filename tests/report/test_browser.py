"""The report in a real browser: headless chromium loads it from disk (offline), every figure lays out
with its curves, bars and points drawn, and the tables it renders hold audit.json's numbers.

Skipped only when chromium is not on PATH (Debian: ``apt-get install -y chromium``). Screenshots
go to pytest's tmp dir and are copied to ``runs/report-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from fedmist.report import write_report

from .conftest import ARTIFACTS
from .pagecheck import CHROMIUM, assert_audit_tables_equal, chromium, read_page

# CI sets FEDMIST_REQUIRE_CHROMIUM=1 so that a failed install fails these tests instead of skipping them.
REQUIRED = os.environ.get("FEDMIST_REQUIRE_CHROMIUM") == "1"
pytestmark = pytest.mark.skipif(CHROMIUM is None and not REQUIRED, reason="chromium is not on PATH; install it "
                                "(Debian: apt-get install -y chromium) to test the report in a browser")

# Added to a copy of the report only (the report itself has no script): after layout, each figure
# records its rendered size and how many of its curves / bars / points have a non-empty bounding box.
PROBE = """<script>
for (const s of document.querySelectorAll('svg.figure')) {
  const r = s.getBoundingClientRect();
  let drawn = 0, empty = 0;
  for (const e of s.querySelectorAll('path.series, rect.bar, g.point circle')) {
    const b = e.getBBox();
    if (b.width > 0 || b.height > 0) drawn++; else empty++;
  }
  s.setAttribute('data-rendered', Math.round(r.width) + 'x' + Math.round(r.height));
  s.setAttribute('data-drawn', drawn);
  s.setAttribute('data-empty', empty);
}
document.body.setAttribute('data-probed', 'yes');
</script>"""


def render(report: Path, tmp: Path, name: str) -> tuple[str, Path]:
    """The DOM chromium built from ``report`` (with the probe) and a 1280×2000 screenshot of the report."""
    probed = tmp / f"{name}-probed.html"
    probed.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium(tmp, "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp / f"{name}.png"
    proc = chromium(tmp, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", report.as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1280, 2000)
    assert len(png) > 30_000  # a blank page compresses to a few kB
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)
    shutil.copy(report, ARTIFACTS / f"{name}.html")
    return dom.stdout, shot


def assert_figures_rendered(dom: str, expected: list[str]) -> None:
    page = read_page(dom)
    assert 'data-probed="yes"' in dom, "the page did not finish loading"
    figs = [f for f in page.figures if "data-figure" in f]
    assert [f["data-figure"] for f in figs] == expected
    for f in figs:
        w, h = (int(v) for v in f["data-rendered"].split("x"))
        assert w > 300 and h > 200, f
        assert int(f["data-drawn"]) > 0 and int(f["data-empty"]) == 0, f


def test_audited_run_in_chromium(audited_run: Path, tmp_path: Path) -> None:
    report = write_report(audited_run, tmp_path / "audit.html")
    dom, _ = render(report, tmp_path, "report-audit")
    assert_figures_rendered(dom, ["accuracy", "loss", "roc", "roc-vulnerable"])
    assert_audit_tables_equal(read_page(dom), json.loads((audited_run / "audit.json").read_text()))


def test_comparison_in_chromium(compare_dir: Path, tmp_path: Path) -> None:
    dom, _ = render(write_report(compare_dir, tmp_path / "cmp.html"), tmp_path, "report-compare-synthetic")
    assert_figures_rendered(dom, ["tradeoff", "roc-cells"])


def test_location_comparison_in_chromium(location_compare_dir: Path, tmp_path: Path) -> None:
    dom, _ = render(write_report(location_compare_dir, tmp_path / "loc.html"), tmp_path, "report-compare-location")
    assert_figures_rendered(dom, ["tradeoff"])
    assert read_page(dom).values["compare/mist/plr_0.1"] == 28.712871287128714


def test_fl_study_and_threat_audits_in_chromium(fl_dir: Path, tmp_path: Path) -> None:
    dom, _ = render(write_report(fl_dir, tmp_path / "fl.html"), tmp_path, "report-fl-study")
    assert_figures_rendered(dom, ["fl-threats"])
    run = fl_dir / "runs" / "mist"
    dom, _ = render(write_report(run, tmp_path / "fl-mist.html"), tmp_path, "report-fl-run-mist")
    assert_figures_rendered(dom, ["accuracy", "loss", "roc", "roc-client0", "roc-client0-peerleak", "roc-server"])
    page = read_page(dom)
    assert_audit_tables_equal(page, json.loads((run / "audit-server.json").read_text()), "audit-server")
