"""The MIST authors' code (``../shared/anchors/mist-authors/``, set up with its ``setup.sh``) run
beside a benchmark, so fedmist's epoch time is printed against theirs from the same run."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

EPOCH_TIME = re.compile(r"EPOCH_TIME epoch=(\d+) total=([0-9.]+)")


def check_authors(root: Path | None, dataset: str) -> None:
    """Before the benchmark runs: a usable ``--authors`` directory, and Location (their recipe)."""
    why = ("" if root is None else
           "--authors times the authors' Location recipe; use it with --dataset location" if dataset != "location" else
           f"--authors {root}: no run.sh there; build it with ../shared/anchors/mist-authors/setup.sh"
           if not (Path(root) / "run.sh").is_file() else "")
    if why:
        print(f"error: {why}", file=sys.stderr)
        sys.exit(2)


def authors_epoch_times(root: Path, mode: str, epochs: int) -> list[float]:
    """Seconds per epoch of ``root/run.sh MODE EPOCHS workers0`` (the authors' Location recipe,
    DataLoader workers off, no nice), epoch 1 left out as in fedmist's benchmarks."""
    script = Path(root) / "run.sh"
    proc = subprocess.run(["bash", str(script), mode, str(epochs), "workers0"], capture_output=True, text=True,
                          env={**os.environ, "MIST_NICE": ""}, check=False)
    times = {int(e): float(t) for e, t in EPOCH_TIME.findall(proc.stdout)}
    if proc.returncode != 0 or len(times) < epochs:
        raise SystemExit(f"the authors' code failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return [times[e] for e in sorted(times) if e > 1]


def print_against_authors(root: Path, epochs: int, ours: dict[str, float]) -> None:
    """One line per fedmist measurement: its median epoch over the authors' MIST median epoch."""
    theirs = statistics.median(authors_epoch_times(root, "mist", epochs))
    print(f"the authors' code, MIST, workers off: {theirs:.3f} s/epoch (median of epochs 2-{epochs})")
    for name, seconds in ours.items():
        print(f"ratio {name} / authors' code = {seconds / theirs:.2f}")
