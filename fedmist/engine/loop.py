"""The MIST epoch loop (paper Algorithm 1), written once over an abstract federation.

Per epoch: partition the members, phase 1 on every client, targets from the peers' phase-1
true-class probabilities, phase 2 (xdiff) on every client, equal-weight average.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedmist.config import RunConfig
from fedmist.data.split import partition
from fedmist.defenses import DEFENSES
from fedmist.errors import FederationError
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
    extra: dict[str, Any] = field(default_factory=dict)  # numbers, plus ``dropped`` (list of clients)


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
    dropped: dict[int, str] = {}
    local = sorted(federation.local(cfg, jobs), key=lambda r: r.client)
    _note_dropouts("phase 1", [j.client for j in jobs], [r.client for r in local], federation, dropped, cfg)
    if virtual_targets and not piggyback:  # the separate query.predict round
        asked = [PredictJob(r.client, epoch, r.state, _others(parts, r.client)) for r in local]
        probs = {p.client: p.probs for p in federation.predict(cfg, asked)}
        _note_dropouts("query.predict", [a.client for a in asked], list(probs), federation, dropped, cfg)
        local = [r for r in local if r.client in probs]
        for r in local:
            r.probs = probs[r.client]
    t1 = time.perf_counter()

    xdiff_loss, xdiff_seconds = None, 0.0
    if do_xdiff and len(local) < 2:
        _log(f"epoch {epoch}: only client(s) {[r.client for r in local]} left after dropouts; "
             "no peers for the xdiff targets, phase 2 skipped")
        do_xdiff = False
    if do_xdiff:
        if virtual_targets:
            targets = _targets_from_replies(members, parts, local)
            xjobs = [XdiffJob(r.client, epoch, lr, r.state, parts[r.client], targets=targets[r.client]) for r in local]
        else:
            xjobs = [XdiffJob(r.client, epoch, lr, r.state, parts[r.client],
                              peer_states=[p.state for p in local if p.client != r.client]) for r in local]
        finals = sorted(federation.xdiff(cfg, xjobs), key=lambda r: r.client)
        _note_dropouts("phase 2", [j.client for j in xjobs], [r.client for r in finals], federation, dropped, cfg)
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
    report.extra["dropped"] = sorted(dropped)
    if dropped:
        report.extra["dropout_reasons"] = {str(c): why for c, why in sorted(dropped.items())}
        _log(f"epoch {epoch}: averaged {len(states)} of {cfg.clients} clients; dropped {sorted(dropped)}")
    return new_state, report


def _others(parts: list[np.ndarray], c: int) -> np.ndarray:
    """Rows of every partition but client c's, in partition order (what c predicts on)."""
    return np.concatenate([p for i, p in enumerate(parts) if i != c])


def _targets_from_replies(members: np.ndarray, parts: list[np.ndarray], local: list[LocalResult]) -> dict[int, np.ndarray]:
    """Targets of every replying client's partition: the mean over the *other replying* clients of
    their phase-1 true-class probabilities (all C clients when none dropped out)."""
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
    alive = [r.client for r in local]  # sorted; a dropped client's row and partition are left out
    cols = np.flatnonzero(np.isin(owner, alive))
    row_of = {c: k for k, c in enumerate(alive)}
    t = np.full(N, np.nan, dtype=np.float32)
    t[cols] = xdiff_targets(probs[alive][:, cols], np.array([row_of[c] for c in owner[cols]], dtype=np.int64))
    return {c: t[[pos[i] for i in parts[c].tolist()]] for c in alive}


def _note_dropouts(phase: str, asked: list[int], got: list[int], federation: Federation, dropped: dict[int, str],
                   cfg: RunConfig) -> None:
    """Record who did not reply validly (the federation logged why); fail below ``min_clients``."""
    why = getattr(federation, "rejected", {})
    for c in sorted(set(asked) - set(got)):
        dropped.setdefault(c, f"{phase}: {why.get(c, 'no valid reply')}")
    need = cfg.clients if cfg.min_clients <= 0 else cfg.min_clients
    if len(got) < need:
        raise FederationError(f"{phase}: valid replies from {sorted(got)} only; {need} needed "
                              f"(min_clients={cfg.min_clients}); missing {sorted(set(asked) - set(got))}")


def _log(msg: str) -> None:
    print(msg, flush=True)


def train(cfg: RunConfig, federation: Federation, state: State, members: np.ndarray, start_epoch: int = 1,
          on_epoch: Callable[[State, EpochReport], None] | None = None,
          reference: np.ndarray | None = None) -> State:
    """Run epochs ``start_epoch..cfg.epochs``; ``on_epoch`` evaluates, logs and checkpoints."""
    for epoch in range(start_epoch, cfg.epochs + 1):
        state, report = run_epoch(cfg, federation, state, members, epoch, reference)
        if on_epoch is not None:
            on_epoch(state, report)
    return state
