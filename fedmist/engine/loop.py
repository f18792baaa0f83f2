"""The MIST epoch loop (paper Algorithm 1), written once over an abstract federation.

Per epoch: partition the members, phase 1 on every client, targets from the peers' phase-1
true-class probabilities, phase 2 (xdiff) on every client, equal-weight average.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedmist.config import RunConfig
from fedmist.data.split import partition
from fedmist.defenses import DEFENSES
from fedmist.engine.jobs import LocalJob, LocalResult, PredictJob, PredictResult, State, XdiffJob, XdiffResult
from fedmist.training.aggregate import average_states
from fedmist.training.xdiff import xdiff_targets


class Federation(Protocol):
    """Runs a batch of jobs on the clients (concurrently where the transport allows)."""

    def local(self, cfg: RunConfig, jobs: list[LocalJob]) -> list[LocalResult]: ...

    def xdiff(self, cfg: RunConfig, jobs: list[XdiffJob]) -> list[XdiffResult]: ...

    def predict(self, cfg: RunConfig, jobs: list[PredictJob]) -> list[PredictResult]: ...


@dataclass
class EpochReport:
    epoch: int
    lr: float
    local_loss: float
    xdiff_loss: float | None
    time_local: float
    time_xdiff: float
    time_aggregate: float
    extra: dict[str, float] = field(default_factory=dict)


def lr_at(cfg: RunConfig, epoch: int) -> float:
    """Step schedule of Table 7: lr × 0.1 for every milestone already reached."""
    return cfg.lr * (0.1 ** sum(1 for m in cfg.lr_schedule if epoch > m))


def run_epoch(cfg: RunConfig, federation: Federation, state: State, members: np.ndarray, epoch: int,
              reference: np.ndarray | None = None) -> tuple[State, EpochReport]:
    """One epoch of Algorithm 1 (or plain SGD / phase-1-only, as the defense says).

    ``reference``: the held-out rows a defense's training step may use (MMD, AdvReg), sent to
    every client with its phase-1 job."""
    reference = np.empty(0, np.int64) if reference is None else reference
    spec = DEFENSES[cfg.defense]
    lr = lr_at(cfg, epoch)
    parts = partition(members, cfg.clients, cfg.seed, epoch, cfg.repartition)
    do_xdiff = spec.xdiff and not (cfg.skip_last_xdiff and epoch == cfg.epochs)
    virtual_targets = do_xdiff and cfg.mode == "virtual"
    piggyback = virtual_targets and cfg.predict_in_train_reply

    t0 = time.perf_counter()
    jobs = []
    for c, rows in enumerate(parts):
        others = _others(parts, c) if piggyback else np.empty(0, np.int64)
        jobs.append(LocalJob(c, epoch, lr, state, rows, others, reference_rows=reference))
    local = sorted(federation.local(cfg, jobs), key=lambda r: r.client)
    _check_complete("phase 1", [r.client for r in local], cfg.clients)
    if virtual_targets and not piggyback:  # the separate query.predict round
        asked = [PredictJob(r.client, epoch, r.state, _others(parts, r.client)) for r in local]
        probs = {p.client: p.probs for p in federation.predict(cfg, asked)}
        _check_complete("query.predict", list(probs), cfg.clients)
        for r in local:
            r.probs = probs[r.client]
    t1 = time.perf_counter()

    xdiff_loss, xdiff_seconds = None, 0.0
    if do_xdiff:
        if virtual_targets:
            targets = _targets_from_replies(members, parts, local)
            xjobs = [XdiffJob(r.client, epoch, lr, r.state, parts[r.client], targets=targets[r.client]) for r in local]
        else:
            xjobs = [XdiffJob(r.client, epoch, lr, r.state, parts[r.client],
                              peer_states=[p.state for p in local if p.client != r.client]) for r in local]
        finals = sorted(federation.xdiff(cfg, xjobs), key=lambda r: r.client)
        _check_complete("phase 2", [r.client for r in finals], cfg.clients)
        states = [r.state for r in finals]
        xdiff_loss = float(np.mean([r.xdiff for r in finals]))
        xdiff_seconds = float(sum(r.seconds for r in finals))
    else:
        states = [r.state for r in local]
    t2 = time.perf_counter()
    new_state = average_states(states)
    t3 = time.perf_counter()
    report = EpochReport(epoch, lr, float(np.mean([r.loss for r in local])), xdiff_loss, t1 - t0, t2 - t1, t3 - t2)
    report.extra["client_seconds_local"] = float(sum(r.seconds for r in local))
    report.extra["client_seconds_xdiff"] = xdiff_seconds
    return new_state, report


def _others(parts: list[np.ndarray], c: int) -> np.ndarray:
    """Rows of every partition but client c's, in partition order (what c predicts on)."""
    return np.concatenate([p for i, p in enumerate(parts) if i != c])


def _targets_from_replies(members: np.ndarray, parts: list[np.ndarray], local: list[LocalResult]) -> list[np.ndarray]:
    """Assemble the (C, N) matrix of peer probabilities from the phase-1 replies and average."""
    pos = {r: i for i, r in enumerate(members.tolist())}
    C, N = len(parts), len(members)
    probs = np.full((C, N), np.nan, dtype=np.float32)
    owner = np.empty(N, dtype=np.int64)
    for c, rows in enumerate(parts):
        owner[[pos[r] for r in rows.tolist()]] = c
    for r in local:
        others = _others(parts, r.client)
        if r.probs.shape != others.shape:
            raise ValueError(f"client {r.client} returned {r.probs.shape} probabilities, expected {others.shape}")
        probs[r.client, [pos[i] for i in others.tolist()]] = r.probs
    t = xdiff_targets(probs, owner)
    return [t[[pos[i] for i in rows.tolist()]] for rows in parts]


def _check_complete(phase: str, got: list[int], clients: int) -> None:
    if sorted(got) != list(range(clients)):
        missing = sorted(set(range(clients)) - set(got))
        raise RuntimeError(f"{phase}: no valid reply from client(s) {missing}")


def train(cfg: RunConfig, federation: Federation, state: State, members: np.ndarray, start_epoch: int = 1,
          on_epoch: Callable[[State, EpochReport], None] | None = None,
          reference: np.ndarray | None = None) -> State:
    """Run epochs ``start_epoch..cfg.epochs``; ``on_epoch`` evaluates, logs and checkpoints."""
    for epoch in range(start_epoch, cfg.epochs + 1):
        state, report = run_epoch(cfg, federation, state, members, epoch, reference)
        if on_epoch is not None:
            on_epoch(state, report)
    return state
