"""Command-line plumbing shared by the ``experiments/`` scripts: bad input ends in one line and exit code 2.

Argument types for ``argparse`` (a bad value -> ``X.py: error: argument --epochs: ...``, exit 2),
and :func:`run_main`, which calls a script's ``main`` and turns fedmist's ``FedmistError`` (unknown
dataset or defense, bad config, missing data, ...) into ``error: ...`` and exit code 2. Scripts
check their arguments (and build every config they will train) before the first training starts.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from fedmist import FedmistError


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def at_least(low: int, why: str = "") -> Callable[[str], int]:
    """An integer >= ``low`` (``why`` says what the bound is for)."""
    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}{why}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = at_least(1)
nonnegative_int = at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def even_shadows(text: str) -> int:
    """A shadow count: 0 (no shadow attacks) or an even number (each example IN for half)."""
    value = _int(text)
    if value < 0 or value % 2:
        raise argparse.ArgumentTypeError(f"must be 0 or an even number of shadow models, got {value}")
    return value


def _number_list(text: str, kind: type, what: str) -> list:
    try:
        values = [kind(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite {what}, got {text!r}")
    return values


def int_list(text: str) -> list[int]:
    """Comma-separated integers, at least one."""
    return _number_list(text, int, "integers")


def float_list(text: str) -> list[float]:
    """Comma-separated finite numbers, at least one."""
    return _number_list(text, float, "numbers")


def name_list(text: str) -> list[str]:
    """Comma-separated names, at least one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def shadows_for(text: str) -> tuple[str, int]:
    """``DEFENSE=N`` (another shadow count for one defense)."""
    name, _, n = text.partition("=")
    if not name.strip() or not n.strip().isdigit() or int(n) % 2:
        raise argparse.ArgumentTypeError(f"expected DEFENSE=N with N even, got {text!r}")
    return name.strip(), int(n)


def require_files(ap: argparse.ArgumentParser, folder: Path, names: tuple[str, ...], hint: str) -> None:
    """``ap.error`` (exit 2) unless every file in ``names`` is inside ``folder``."""
    missing = [n for n in names if not (Path(folder) / n).is_file()]
    if missing:
        what = "does not exist" if not Path(folder).exists() else f"has no {', '.join(missing)}"
        ap.error(f"{folder} {what}; {hint}")


def run_main(main: Callable[[], object]) -> None:
    """Call ``main()``; a ``FedmistError`` becomes ``error: MESSAGE`` on stderr and exit code 2."""
    try:
        main()
    except FedmistError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
