"""The SVG primitives: decade ticks, log axes that clamp what they cannot show, escaped text, well-formed output."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from fedmist.report import svg


def test_decade_ticks_and_labels() -> None:
    major, minor = svg.log_ticks(1e-4, 1.0)
    assert major == [1e-4, 1e-3, 1e-2, 0.1, 1.0]
    assert len(minor) == 4 * 8 and 2e-4 in minor and 9e-1 in minor
    assert [svg.tick_label(v, True) for v in major] == ["10⁻⁴", "0.001", "0.01", "0.1", "1"]
    assert svg.log_ticks(0.5, 300.0)[0] == [1.0, 10.0, 100.0]
    assert svg.linear_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert svg.decade_floor(1 / 1010) == pytest.approx(1e-4) and svg.decade_ceil(287.1) == pytest.approx(1000.0)


def test_log_axis_clamps_zero_and_rejects_bad_ranges() -> None:
    ax = svg.Axis("fpr", 1e-3, 1.0, log=True)
    assert ax.fraction(0.0) == 0.0 and ax.fraction(1e-3) == 0.0 and ax.fraction(1.0) == 1.0
    assert ax.fraction(10.0) == 1.0 and ax.fraction(0.01) == pytest.approx(1 / 3)
    assert math.isnan(ax.fraction(math.nan))
    with pytest.raises(ValueError):
        svg.Axis("bad", 0.0, 1.0, log=True)
    with pytest.raises(ValueError):
        svg.Axis("bad", 1.0, 1.0)


def _parse(text: str) -> ET.Element:
    return ET.fromstring(text)  # inline SVG without xmlns is still well-formed XML


def test_line_chart_is_well_formed_escaped_and_breaks_at_nan() -> None:
    s = svg.Series("<script>alert(1)</script> & co", [0.0, 0.001, math.nan, 0.1, 1.0], [0.0, 0.01, 0.5, 0.2, 1.0])
    text = svg.line_chart([s], svg.Axis("x", 1e-3, 1, log=True), svg.Axis("y", 1e-3, 1, log=True), "t <b>",
                          kind="roc", diagonal=True, legend_width=150)
    root = _parse(text)
    assert root.tag == "svg" and root.get("data-figure") == "roc"
    assert "<script>" not in text and "&lt;script&gt;" in text and "t &lt;b&gt;" in text
    path = next(p for p in root.iter("path") if p.get("class") == "series")
    assert path.get("d").count("M") == 2  # the NaN point starts a new segment
    labels = [t.text for t in root.iter("text")]
    assert {"0.001", "0.01", "0.1", "1"} <= set(labels)


def test_scatter_and_bars() -> None:
    pts = [svg.Point("sgd", 73.7, 145.5), svg.Point("mist", 55.6, 28.7), svg.Point("zero", 60.0, 0.0)]
    root = _parse(svg.scatter_chart(pts, svg.Axis("acc", 50, 80), svg.Axis("plr", 0.1, 1000, log=True), "t"))
    assert [g.get("data-label") for g in root.iter("g") if g.get("class") == "point"] == ["mist", "zero", "sgd"]  # drawn in x order
    root = _parse(svg.bar_chart(["a", "b"], [("x", [1.0, 10.0]), ("y", [math.nan, 0.5])],
                                svg.Axis("v", 0.1, 100, log=True), "bars", reference=1.0))
    assert len([r for r in root.iter("rect") if r.get("class") == "bar"]) == 3  # NaN: no bar
