"""FL rounds over the engine's ``Federation`` (in-process or Flower): FedAvg, MIST, DP-FedAvg.

Every client holds one fixed partition of the training set for the whole run (``partition``:
IID or Dirichlet label skew, ``partition.npz`` in the run directory). A round:

1. ``train`` job on every client from the global model θ: ``local_epochs`` passes over its own
   rows (the defense's step), the active attacker's gradient ascent if configured, DP clipping;
2. MIST only: ``train.xdiff`` with the *other* clients' phase-1 weights (private-data mode: the
   server forwards them, each client computes its own targets);
3. FedAvg: θ ← Σ_k w_k θ_k with w_k = n_k / n (equal weights under DP-FedAvg, so that the
   noise std z·C/m of Flower's ``compute_stdv`` matches the sensitivity C/m of the average);
4. DP-FedAvg: θ ← θ + N(0, (z·C/m)²) per coordinate, seeded by (seed, round);
5. with ``record_updates``: θ_{R-1}, every upload and (MIST) every forwarded phase-1 model.

ε (DP-FedAvg): client-level (add/remove one client's whole partition), every client takes part
in every round (sampling rate q = 1, no amplification by subsampling), ``rounds`` compositions of
the Gaussian mechanism with noise multiplier z, Opacus's RDP accountant.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedmist.config import RunConfig, parse_client
from fedmist.data.fl_partition import class_histograms, partition_rows
from fedmist.engine.loop import RoundPlan, train_rounds
from fedmist.engine.recording import Recorder, check_budget, estimate_bytes
from fedmist.training.jobs import AUX, DefenseHooks, Federation, State, model_part
from fedmist.training.privacy import epsilon_spent
from fedmist.training.workspace import get_workspace

PARTITION_FILE = "partition.npz"
TARGETS_FILE = "active_targets.npz"


def client_partitions(cfg: RunConfig, members: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Each client's fixed rows (``labels``: the whole dataset's labels)."""
    members = np.asarray(members, dtype=np.int64)
    return partition_rows(members, np.asarray(labels)[members], cfg.clients, cfg.partition, cfg.seed)


def aggregation_weights(cfg: RunConfig, parts: list[np.ndarray]) -> dict[int, float]:
    if cfg.fl_dp_noise > 0:
        return {k: 1.0 / len(parts) for k in range(len(parts))}
    n = sum(len(p) for p in parts)
    return {k: len(p) / n for k, p in enumerate(parts)}


def active_target_rows(cfg: RunConfig, parts: list[np.ndarray], nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The active attacker's targets: half from the other clients' partitions, half non-members,
    seeded; returns (rows, is_member)."""
    k = parse_client(cfg.active_attack, cfg.clients, "active_attack")
    others = np.concatenate([p for i, p in enumerate(parts) if i != k])
    half = min(cfg.active_targets // 2, len(others), len(nonmembers))
    rng = np.random.default_rng([cfg.seed, 0xAC71])
    mem = rng.choice(others, half, replace=False)
    non = rng.choice(np.asarray(nonmembers, dtype=np.int64), half, replace=False)
    order = rng.permutation(2 * half)
    return np.concatenate([mem, non])[order].astype(np.int64), np.r_[np.ones(half, bool), np.zeros(half, bool)][order]


def n_floats(state: State) -> int:
    return int(sum(v.numel() for v in model_part(state).values() if v.is_floating_point()))


def recording_estimate(cfg: RunConfig, spec: DefenseHooks, state: State) -> int:
    return estimate_bytes(n_floats(state), cfg.clients, cfg.epochs, spec.xdiff)


def fl_algorithm(cfg: RunConfig, spec: DefenseHooks) -> str:
    """The name of what an FL run trains, from the defense's registry entry (``fl_name``); runs made
    before ``fedavg`` / ``dpfedavg`` existed say ``sgd``, which is FedAvg or, with noise, DP-FedAvg."""
    if cfg.defense == "sgd" and cfg.fl_dp_noise > 0:
        return "DP-FedAvg"
    return spec.fl_name


def epsilon(cfg: RunConfig, rounds: int | None = None) -> float:
    return epsilon_spent(cfg.fl_dp_noise, 1.0, cfg.epochs if rounds is None else rounds, cfg.fl_dp_delta)


def add_noise_(state: State, cfg: RunConfig, rnd: int, m: int) -> None:
    """DP-FedAvg's server noise, std from Flower's ``compute_stdv(z, C, m)``, seeded per round."""
    from flwr.supercore.differential_privacy import compute_stdv

    std = compute_stdv(cfg.fl_dp_noise, cfg.fl_dp_clip, m)
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, 0xD9, rnd]).generate_state(1, dtype=np.uint64)[0] % (2**62)))
    for k, v in state.items():
        if v.is_floating_point() and not k.startswith(AUX):
            state[k] = v + std * torch.randn(v.shape, generator=gen, dtype=torch.float64).to(v.dtype)


def fl_plan(cfg: RunConfig, parts: list[np.ndarray], weights: dict[int, float], ascent: np.ndarray | None = None,
            recorder: Recorder | None = None) -> RoundPlan:
    """A round of real FL, the same every round: each client its own rows, data-size weights,
    DP-FedAvg's noise after the average, the active attacker's targets, and the recording of what
    every party observes."""
    attacker = parse_client(cfg.active_attack, cfg.clients, "active_attack") if cfg.active_attack else -1

    def after_average(state: State, m: int, rnd: int) -> None:
        if cfg.fl_dp_noise > 0:
            add_noise_(state, cfg, rnd, m)

    def on_uploads(rnd: int, start: State, phase1: dict[int, State] | None, uploads: dict[int, State],
                   shares: dict[int, float]) -> dict:
        extra: dict = {}
        if attacker >= 0:
            n = 0 if ascent is None else len(ascent)
            extra["active_attack"] = f"client {attacker}: gradient ascent on {n} target rows"
            print(f"ACTIVE ATTACK round {rnd}: client {attacker} uploads weights after gradient ascent on "
                  f"{n} target rows (active_attack={cfg.active_attack})", flush=True)
        if recorder is not None:
            recorder.save_round(rnd, start, {c: model_part(s) for c, s in uploads.items()}, shares,
                                None if phase1 is None else {c: model_part(s) for c, s in phase1.items()})
            extra["record_seconds"] = recorder.seconds
        return extra

    return RoundPlan(parts, virtual_targets=False, weights=weights, after_average=after_average,
                     on_uploads=on_uploads, labels=("local training", "xdiff"),
                     ascent={attacker: ascent} if attacker >= 0 and ascent is not None else {})


def train_fl(run: Any, spec: DefenseHooks, federation: Federation) -> State:
    """Train an opened FL run (``run.cfg.mode == "fl"``) from ``run.start_epoch`` to the last round."""
    cfg = run.cfg
    ds = get_workspace(cfg).dataset
    parts = client_partitions(cfg, run.split.members, ds.y)
    weights = aggregation_weights(cfg, parts)
    ascent = None
    if run.path is not None:
        np.savez(run.path / PARTITION_FILE, owner=np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)]),
                 rows=np.concatenate(parts), histogram=class_histograms(parts, ds.y, ds.num_classes))
    if cfg.active_attack:
        ascent, is_member = active_target_rows(cfg, parts, run.split.nonmembers)
        if run.path is not None:
            np.savez(run.path / TARGETS_FILE, rows=ascent, is_member=is_member)
        print(f"ACTIVE ATTACK enabled: {cfg.active_attack} does gradient ascent on {len(ascent)} target rows "
              f"before every upload (Nasr et al. 2019); this run is an attack experiment", flush=True)
    recorder = None
    if cfg.record_updates and run.path is not None:
        check_budget(n_floats(run.state), cfg.clients, cfg.epochs, spec.xdiff, cfg.max_record_gb)
        recorder = Recorder(run.path / "updates")
    plan = fl_plan(cfg, parts, weights, ascent, recorder)
    state = train_rounds(cfg, spec, federation, run.state, lambda rnd: plan, run.start_epoch, run.on_epoch)
    fl = {"partition": cfg.partition, "clients": cfg.clients, "rounds": cfg.epochs, "local_epochs": cfg.local_epochs,
          "algorithm": fl_algorithm(cfg, spec), "client_sizes": [int(len(p)) for p in parts],
          "aggregation_weights": [weights[k] for k in range(len(parts))]}
    if cfg.active_attack:
        fl["active_attack"] = {"attacker": cfg.active_attack, "targets": int(len(ascent)), "lr": cfg.active_lr,
                               "steps": cfg.active_steps}
    if cfg.fl_dp_noise > 0:
        fl["dp"] = {"epsilon": epsilon(cfg), "delta": cfg.fl_dp_delta, "noise_multiplier": cfg.fl_dp_noise,
                    "clipping_norm": cfg.fl_dp_clip, "level": "client (a whole partition)",
                    "sampling": "every client every round (q = 1, no subsampling amplification)",
                    "accountant": "opacus rdp", "clipping": "client side (flwr compute_clip_model_update)",
                    "noise": "server side, std = flwr compute_stdv(z, C, m)"}
    if recorder is not None:
        recorder.save_final(model_part(state))
        fl["recording"] = {"bytes": recorder.bytes, "estimated_uncompressed_bytes": recording_estimate(cfg, spec, state),
                           "seconds": recorder.seconds, "dir": "updates",
                           "dtypes": "global float32, client updates float16 (.npz)"}
    run.extra_summary["fl"] = fl
    return state
