"""Command logic behind ``fedmist attack``: plain functions the typer app wraps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from fedmist.attacks import ATTACKS
from fedmist.audit.pipeline import TrainFnFactory, audit_run
from fedmist.runs.load import load_run


def run_audit(run_dir: Path, attacks: list[str], n_shadows: int, train_fn_factory: TrainFnFactory,
              rebuild: bool = False, seed: int = 0, fprs: Sequence[float] = (0.001, 0.01), n_bootstrap: int = 200,
              vulnerable_rows: np.ndarray | None = None, progress: bool = True,
              on_attack: Callable[[str, float], None] | None = None) -> dict:
    """Load the run in ``run_dir``, audit it with ``attacks`` and write audit.json, audit.csv,
    scores.npz, roc.png and roc_linear.png into it (shadows under ``run_dir/shadows``).

    ``train_fn_factory(run, seed)`` returns ``train_fn(shadow_index, member_rows) -> state_dict``;
    it is only called when a shadow model is missing from the cache. ``rebuild`` discards the
    cache first. Returns the report (audit.json's content).
    """
    run = load_run(Path(run_dir))
    return audit_run(run, attacks, n_shadows, train_fn_factory, rebuild=rebuild, seed=seed, fprs=fprs,
                     n_bootstrap=n_bootstrap, vulnerable_rows=vulnerable_rows, progress=progress,
                     on_attack=on_attack)


def list_attacks() -> Table:
    """Every registered attack with its description and what it needs."""
    table = Table(title="membership-inference attacks (score: higher = more likely member)")
    table.add_column("attack")
    table.add_column("description")
    table.add_column("needs")
    for name in sorted(ATTACKS):
        spec = ATTACKS[name]
        needs = sorted(spec.needs) + [f for f in spec.fields]
        table.add_row(name, spec.description, ", ".join(needs))
    return table
