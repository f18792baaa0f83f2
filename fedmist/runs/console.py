"""Console output shared by the commands: epoch lines, progress bars and summary tables."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=False)


def fmt(v: float | None, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.2f}%" if pct else f"{v:.4f}"


def epoch_line(name: str, row: dict) -> str:
    parts = [f"[bold]{name}[/] epoch {row['epoch']:>3}", f"loss {fmt(row['local_loss'])}"]
    if row.get("xdiff_loss") is not None:
        parts.append(f"xdiff {fmt(row['xdiff_loss'])}")
    if "train_acc" in row:
        parts += [f"train {fmt(row['train_acc'], True)}", f"test {fmt(row['test_acc'], True)}"]
    parts.append(f"{row['wall_time']:.1f}s")
    return " | ".join(parts)


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                    transient=False)


def summary_table(name: str, s: dict) -> Table:
    """One run's results as a two-column table (fits an 80-column terminal)."""
    t = Table(title=f"summary — {name}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    pt = s["phase_time"]
    rows = [
        ("data", "SYNTHETIC" if s["synthetic"] else "real"),
        ("members / non-members / test", f"{s['members']} / {s['nonmembers']} / {s['test']}"
         + (" (test = non-members)" if s["test_is_nonmembers"] else "")),
        ("train accuracy", fmt(s["train_acc"], True)),
        ("test accuracy", fmt(s["test_acc"], True)),
        ("generalization gap", fmt(s["gap"], True)),
        ("epochs", str(s["epochs"])),
        ("start-up (Ray, clients)", f"{s.get('startup_time', 0.0):.1f} s"),
        ("training wall time", f"{s['wall_time']:.1f} s"),
        ("median epoch", f"{s['median_epoch_time']:.3f} s"),
        ("phase 1 / xdiff / aggregate / eval", f"{pt['local']:.1f} / {pt['xdiff']:.1f} / {pt['aggregate']:.1f} / {pt['eval']:.1f} s"),
    ]
    defense = s.get("defense", {})
    if "epsilon" in defense and "delta" in defense:  # DP-SGD's (ε, δ)
        rows.append(("privacy (DP-SGD)", f"ε = {defense['epsilon']:.3g} at δ = {defense['delta']:.0e}"))
    dp = s.get("fl", {}).get("dp", {})
    if dp:
        rows.append(("privacy (DP-FedAvg, client level)", f"ε = {dp['epsilon']:.3g} at δ = {dp['delta']:.0e}"))
    for k, v in rows:
        t.add_row(k, v)
    return t
