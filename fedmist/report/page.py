"""``fedmist report PATH``: one self-contained HTML file for a run, an audit or a study.

The kind is told from the files present:

- ``compare-fl.csv``: an FL threat study (``fedmist compare --mode fl``);
- ``compare.csv``: a comparison of defenses (``fedmist compare``);
- ``config.json``: a run directory (``fedmist simulate``), with every audit in it
  (``audit.json`` from ``fedmist attack``, ``audit-<threat>.json`` from ``fedmist attack --threat``).

The page has no script, font, stylesheet or image from elsewhere: figures are inline SVG, styles
inline CSS, so it opens from disk or as an e-mail attachment.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from fedmist.errors import RunDirError
from fedmist.report import sections as S

CSS = """
:root{color-scheme:light}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;color:#111;background:#fafafa}
header{background:#203040;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#cfd8e0}
nav{padding:8px 28px;background:#eef2f5;border-bottom:1px solid #d5dde3}
nav a{margin-right:14px;color:#1f4e79;text-decoration:none}
main{padding:8px 28px 40px;max-width:1500px}
section{background:#fff;border:1px solid #e1e5e8;border-radius:6px;padding:6px 18px 14px;margin:16px 0}
h2{font-size:17px;border-bottom:1px solid #e1e5e8;padding-bottom:4px}h3{font-size:14px;margin:14px 0 6px}
.tw{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #dde2e6;padding:3px 7px;text-align:left;vertical-align:top}
thead th{background:#f1f4f6;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.paper{background:#fff6e0}
.ci{color:#666;font-size:11.5px}
th.best{background:#e6f2e6}
table.kv th{background:#f7f9fa;font-weight:500;white-space:nowrap}
table.kv thead{display:none}
td.changed{font-weight:700}td.muted{color:#888}
pre.cmd{background:#f4f6f8;border:1px solid #e1e5e8;padding:8px;white-space:pre-wrap;word-break:break-all;font-size:12.5px}
p.note{color:#555;font-size:12.5px}p.headline{font-weight:600}p.warn{color:#a33}
p.rows{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}
svg.figure{display:block;margin:10px 0;border:1px solid #eee}
.figs{display:flex;flex-wrap:wrap;gap:12px}
@media print{nav{display:none}section{break-inside:avoid}}
"""


def detect_kind(path: Path) -> str:
    """"fl-compare", "compare", "audit" (a run with audit*.json) or "run"; RunDirError otherwise."""
    if not path.exists():
        raise RunDirError(f"{path} does not exist")
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory: give a run, audit or comparison directory")
    if (path / "compare-fl.csv").is_file():
        return "fl-compare"
    if (path / "compare.csv").is_file():
        return "compare"
    if (path / "config.json").is_file():
        if not (path / "metrics.json").is_file():
            raise RunDirError(f"{path} has a config.json but no metrics.json: the run has not finished")
        return "audit" if S.audit_files(path) else "run"
    raise RunDirError(f"{path} holds no run, audit or comparison (looked for config.json + metrics.json, "
                      "compare.csv, compare-fl.csv)")


def build_page(path: Path) -> str:
    """The report of ``path`` as HTML text."""
    path = Path(path)
    kind = detect_kind(path)
    commit = S.git_commit(path)
    secs: list[S.Section] = []
    if kind in ("run", "audit"):
        config = S.read_json(path / "config.json")
        metrics = S.read_json(path / "metrics.json")
        audits = {f.name: S.read_json(f) for f in S.audit_files(path).values()}
        secs.append(S.provenance(path, "audited run" if audits else "training run", config, audits,
                                 S.rerun_commands(path, config, audits), commit))
        secs.append(S.training(metrics))
        for suffix, f in S.audit_files(path).items():
            secs += S.audit_section(path, suffix, audits[f.name])
        title = f"{config.get('defense', '?')} on {config.get('dataset', '?')}, seed {config.get('seed', '?')}"
        summary = metrics.get("summary", {})
        sub = f"test accuracy {S.fmt(100 * S.as_float(summary.get('test_acc')), '.2f')} %"
        head = next((a.get("headline") for a in audits.values() if a.get("headline")), None)
        if head:
            sub += f"; highest PLR@0.1 % FPR {S.fmt(head.get('plr'), '.2f')} ({head.get('attack')})"
    elif kind == "compare":
        body, commands, dataset = S.comparison(path)
        secs.append(S.provenance(path, "comparison", None, {}, commands, commit))
        secs += body
        title = f"comparison of defenses{': ' + dataset if dataset else ''}"
        sub = f"{len(S.read_csv(path / 'compare.csv'))} defenses"
    else:
        body, commands = S.fl_comparison(path)
        secs.append(S.provenance(path, "FL threat study", None, {}, commands, commit))
        secs += body
        title = "membership inference in federated learning"
        sub = f"{len(S.read_csv(path / 'compare-fl.csv'))} rows"
    secs = secs[1:] + secs[:1]  # results first; provenance (commands, config, machine) closes the page
    import fedmist

    sub += f" · fedmist {fedmist.__version__}, commit {commit[:12]}{'+' if 'uncommitted' in commit else ''}"
    nav = "".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in secs)
    content = "".join(f'<section id="{escape(s.id)}"><h2>{escape(s.title)}</h2>{s.body}</section>' for s in secs)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<meta name=\"generator\" content=\"fedmist report\"><title>fedmist report: {escape(title)}</title>"
            f"<style>{CSS}</style></head><body data-kind=\"{escape(kind)}\">"
            f"<header><h1>fedmist report: {escape(title)}</h1><p>{escape(sub)}</p></header>"
            f"<nav>{nav}</nav><main>{content}</main></body></html>\n")


def write_report(path: Path, out: Path | None = None) -> Path:
    """Write the report of ``path`` (a run, audited run, ``fedmist compare`` or ``compare --mode fl``
    directory) to ``out`` (default ``path/report.html``) and return where it went.

    Raises ``fedmist.errors.RunDirError`` (one line) when ``path`` holds none of those.
    """
    path = Path(path)
    html = build_page(path)
    out = Path(out) if out is not None else path / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out
