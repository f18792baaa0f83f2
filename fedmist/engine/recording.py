"""What every party of an FL run could observe, recorded per round under ``runs/NAME/updates/``.

``round-RRRR.npz`` holds, for round R:

- ``global/<param>``: the global model the round started from (θ_{R-1}), float32;
- ``upload/<client>/<param>``: each client's upload minus θ_{R-1} (its update, what the server
  receives), float16 — an update needs far less range than the weights it is added to;
- ``phase1/<client>/<param>`` (MIST only): each client's phase-1 weights minus θ_{R-1}, float16:
  what private-data MIST forwards to every *other* client;
- ``clients``, ``weights``: who replied and their aggregation weights.

``final.npz`` holds the global model after the last round (float32). Files are plain (not
zlib-compressed) ``.npz``: on Location's MLP compression saved 11 % of the size and cost ~2 s per
round, more than half of a FedAvg round's training; float16 is the saving. Loading gives back exactly
the stored arrays (float16 deltas included); ``updates/index.json`` lists rounds, dtypes and sizes.
Integer tensors (BatchNorm counters) are stored as they are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedmist.errors import ConfigError, RunDirError

State = dict[str, torch.Tensor]
DELTA_DTYPE = np.float16
GLOBAL_DTYPE = np.float32
GB = 1e9


def estimate_bytes(n_floats: int, clients: int, rounds: int, phase1: bool) -> int:
    """Uncompressed size of a whole recording: per round one float32 global model and one float16
    update per client (twice with MIST's forwarded phase-1 weights), plus the final model."""
    per_round = n_floats * np.dtype(GLOBAL_DTYPE).itemsize + clients * n_floats * np.dtype(DELTA_DTYPE).itemsize * (2 if phase1 else 1)
    return int(rounds * per_round + n_floats * np.dtype(GLOBAL_DTYPE).itemsize)


def check_budget(n_floats: int, clients: int, rounds: int, phase1: bool, max_gb: float) -> int:
    """The estimate, or a ConfigError before training when it exceeds ``max_gb``."""
    est = estimate_bytes(n_floats, clients, rounds, phase1)
    if est > max_gb * GB:
        raise ConfigError(f"recording updates would take about {est / GB:.2f} GB ({rounds} rounds x {clients} clients "
                          f"x {n_floats:,} weights), more than --max-record-gb {max_gb:g}; record fewer rounds or "
                          "raise the limit")
    return est


def _delta(state: State, base: State) -> dict[str, np.ndarray]:
    out = {}
    for k, v in state.items():
        if v.is_floating_point():
            out[k] = (v.detach().to(torch.float64) - base[k].detach().to(torch.float64)).numpy().astype(DELTA_DTYPE)
        else:
            out[k] = v.detach().cpu().numpy()
    return out


def _plain(state: State) -> dict[str, np.ndarray]:
    return {k: (v.detach().cpu().numpy().astype(GLOBAL_DTYPE) if v.is_floating_point() else v.detach().cpu().numpy())
            for k, v in state.items()}


class Recorder:
    """Writes one compressed file per round; ``bytes`` / ``seconds`` say what it cost."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seconds = 0.0

    def save_round(self, rnd: int, start: State, uploads: dict[int, State], weights: dict[int, float],
                   phase1: dict[int, State] | None = None) -> Path:
        import time

        t0 = time.perf_counter()
        arrays: dict[str, np.ndarray] = {f"global/{k}": v for k, v in _plain(start).items()}
        for c, st in sorted(uploads.items()):
            arrays.update({f"upload/{c}/{k}": v for k, v in _delta(st, start).items()})
        for c, st in sorted((phase1 or {}).items()):
            arrays.update({f"phase1/{c}/{k}": v for k, v in _delta(st, start).items()})
        clients = sorted(uploads)
        arrays["clients"] = np.asarray(clients, dtype=np.int64)
        arrays["weights"] = np.asarray([weights[c] for c in clients], dtype=np.float64)
        path = self.dir / f"round-{rnd:04d}.npz"
        tmp = self.dir / f"round-{rnd:04d}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        self.seconds += time.perf_counter() - t0
        return path

    def save_final(self, state: State) -> None:
        np.savez(self.dir / "final.npz", **{f"global/{k}": v for k, v in _plain(state).items()})
        write_index(self.dir)

    @property
    def bytes(self) -> int:
        return disk_bytes(self.dir)


def disk_bytes(directory: Path) -> int:
    return int(sum(p.stat().st_size for p in Path(directory).glob("*.npz")))


def write_index(directory: Path) -> dict:
    rounds = sorted(int(p.stem.split("-")[1]) for p in Path(directory).glob("round-*.npz") if ".tmp" not in p.name)
    index = {"format": "fedmist-fl-updates-1", "rounds": rounds, "global_dtype": np.dtype(GLOBAL_DTYPE).name,
             "delta_dtype": np.dtype(DELTA_DTYPE).name, "bytes": disk_bytes(directory)}
    (Path(directory) / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


@dataclass
class RoundRecord:
    """One round as recorded: θ_{R-1}, θ_R, and the stored (float16) deltas of each client."""

    round: int
    start: dict[str, np.ndarray]  # global model the round began from
    end: dict[str, np.ndarray]  # global model after the round (next round's start, or final)
    uploads: dict[int, dict[str, np.ndarray]]  # client -> upload − start
    phase1: dict[int, dict[str, np.ndarray]]  # client -> phase-1 weights − start (MIST only)
    weights: dict[int, float]


def _read(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _group(arrays: dict[str, np.ndarray], prefix: str) -> dict[int, dict[str, np.ndarray]]:
    out: dict[int, dict[str, np.ndarray]] = {}
    for name, v in arrays.items():
        if name.startswith(prefix + "/"):
            _, c, k = name.split("/", 2)
            out.setdefault(int(c), {})[k] = v
    return out


def recorded_rounds(directory: Path) -> list[int]:
    directory = Path(directory)
    if not (directory / "final.npz").is_file():
        return []
    return sorted(int(p.stem.split("-")[1]) for p in directory.glob("round-*.npz") if ".tmp" not in p.name)


def load_round(directory: Path, rnd: int) -> RoundRecord:
    directory = Path(directory)
    path = directory / f"round-{rnd:04d}.npz"
    if not path.is_file():
        raise RunDirError(f"no recorded round {rnd} in {directory}")
    arrays = _read(path)
    nxt = directory / f"round-{rnd + 1:04d}.npz"
    end_arrays = _read(nxt) if nxt.is_file() else _read(directory / "final.npz")
    start = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("global/")}
    end = {k.split("/", 1)[1]: v for k, v in end_arrays.items() if k.startswith("global/")}
    clients = [int(c) for c in arrays["clients"]]
    return RoundRecord(rnd, start, end, _group(arrays, "upload"), _group(arrays, "phase1"),
                       dict(zip(clients, [float(w) for w in arrays["weights"]])))
