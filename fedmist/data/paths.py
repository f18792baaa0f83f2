"""Where the benchmark data lives, and how paths are shown to users."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that names the data directory when ``--data-dir`` is not given.
DATA_ENV = "FEDMIST_DATA"

#: Tried in order (relative to the working directory) when neither option nor env var is set.
#: ``../shared/data`` is where a checkout beside the shared benchmark files finds them.
DEFAULT_CANDIDATES: tuple[str, ...] = ("shared/data", "../shared/data")

#: The project checkout; the candidates are also tried relative to it (scripts in experiments/).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$FEDMIST_DATA``, else a default.

    The default is the first existing of ``./shared/data`` and ``../shared/data``; when neither
    exists it is ``./shared/data`` anyway, so "missing file" errors name a sensible place and
    ``fedmist data import`` has somewhere to create. The result is absolute, because simulation
    workers may run in another working directory.
    """
    if data_dir is not None and str(data_dir) != "":
        chosen = Path(data_dir)
    elif os.environ.get(DATA_ENV):
        chosen = Path(os.environ[DATA_ENV])
    else:
        # Relative to the working directory first, then to the project checkout (so scripts run
        # from experiments/ find ../shared beside the project too).
        candidates = [Path(c) for c in DEFAULT_CANDIDATES] + [PROJECT_ROOT / c for c in DEFAULT_CANDIDATES]
        existing = [c for c in candidates if c.is_dir()]
        chosen = existing[0] if existing else Path(DEFAULT_CANDIDATES[0])
    return chosen.expanduser().resolve()


def display_path(path: str | Path) -> str:
    """``path`` relative to the working directory when that is short, else as given.

    Messages and ``Dataset.source`` use it so reports say ``../shared/data/...`` rather than a
    machine-specific absolute path.
    """
    p = Path(path)
    try:
        rel = os.path.relpath(p.resolve(), Path.cwd())
    except ValueError:  # different drive on Windows
        return str(p)
    if rel.split(os.sep)[:2] == [os.pardir, os.pardir]:  # far outside: relative is unreadable
        return str(p)
    return rel
