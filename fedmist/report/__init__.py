"""One self-contained HTML report of a run, an audit or a study: ``write_report(path, out=None)``."""

from fedmist.report.page import write_report

__all__ = ["write_report"]
