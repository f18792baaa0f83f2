"""What the report tests share: reading a report back (numbers, figures, links) and checking its
audit tables against audit.json, and a headless chromium."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path


# --- reading a report back ---------------------------------------------------------------------------
@dataclass
class Page:
    """What a test needs of a report: numeric cells by data-key, figures, links, all text."""

    values: dict[str, float] = field(default_factory=dict)  # data-key -> float(data-value)
    shown: dict[str, str] = field(default_factory=dict)  # data-key -> the cell's visible text
    cis: dict[str, tuple[float, float]] = field(default_factory=dict)  # data-key/ci -> (lo, hi)
    figures: list[dict[str, str]] = field(default_factory=list)  # attributes of every <svg>
    tags: dict[str, int] = field(default_factory=dict)  # tag -> count
    refs: list[str] = field(default_factory=list)  # every src= / href= value
    text: str = ""


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._open: list[str] = []  # data-keys of the spans being read
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.page.tags[tag] = self.page.tags.get(tag, 0) + 1
        self.page.refs += [a[k] for k in ("src", "href") if k in a]
        if tag == "svg":
            self.page.figures.append(a)
        if tag == "span" and "data-value" in a:
            self.page.values[a["data-key"]] = float(a["data-value"])
            self._open.append(a["data-key"])
            self.page.shown[a["data-key"]] = ""
        elif tag == "span" and "data-lo" in a:
            self.page.cis[a["data-key"]] = (float(a["data-lo"]), float(a["data-hi"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self._text.append(data)
        for key in self._open:
            self.page.shown[key] += data

    def close(self) -> None:
        super().close()
        self.page.text = "".join(self._text)


def read_page(html: str) -> Page:
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.page


# --- chromium ------------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless chromium, offline and with a throwaway profile."""
    assert CHROMIUM is not None, "chromium is not on PATH (FEDMIST_REQUIRE_CHROMIUM=1 asks for it)"
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)


def audit_numbers(report: dict, sid: str = "audit") -> dict[str, tuple[float, str, list | None]]:
    """Every number the report's audit tables must show: data-key -> (audit.json value, format, CI)."""
    want: dict[str, tuple[float, str, list | None]] = {}
    for name, res in report["attacks"].items():
        for subset in ("full", "vulnerable"):
            m = res.get(subset)
            if m is None:
                continue
            key = f"{sid}/{subset}/{name}"
            want[f"{key}/auc"] = (m["auc"], ".4f", m["auc_ci"])
            for f, p in m["at_fpr"].items():
                want[f"{key}/{f}/tpr"] = (p["tpr"], ".4f", p["tpr_ci"])
                want[f"{key}/{f}/plr"] = (p["plr"], ".2f", p["plr_ci"])
    return want


def assert_audit_tables_equal(page: Page, report: dict, sid: str = "audit") -> int:
    """The page's audit tables hold exactly audit.json's numbers (and show them rounded); returns how many."""
    want = audit_numbers(report, sid)
    assert want
    for key, (value, spec, ci) in want.items():
        assert key in page.values, f"{key} missing from the report"
        assert page.values[key] == value, (key, page.values[key], value)
        assert page.shown[key] == format(value, spec), (key, page.shown[key])
        if ci is not None:
            assert page.cis[f"{key}/ci"] == (ci[0], ci[1]), key
    return len(want)
