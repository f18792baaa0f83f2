"""The one round loop, written once for MIST's virtual federation and for real FL.

A round (an epoch of MIST, paper Algorithm 1; a round of FedAvg / MIST-in-FL / DP-FedAvg):

1. phase 1: every client trains from the global state on its rows (the defense's step); in the
   virtual federation its reply carries its true-class probabilities on the peers' rows;
2. phase 2 (defenses with ``xdiff``): every client minimises λ·xdiff against targets formed from
   its peers' phase-1 models, by the server from their probabilities (``virtual``) or by the client
   from their forwarded weights (``private``, and FL);
3. the replies are averaged (equal weights, or the plan's) and the plan's ``after_average`` runs
   (DP-FedAvg's noise).

Modes differ only in the ``RoundPlan`` they hand the loop: MIST redraws its partitions every epoch
(``mist_plan``); FL keeps each client's own rows and weights (``fedmist.engine.fl``). One quorum rule
(``min_clients``) and one dropout log serve both. The engine never looks a defense up by name: the
caller hands it the ``DefenseSpec``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fedmist.config import RunConfig
from fedmist.data.split import partition
from fedmist.errors import FederationError
from fedmist.training.aggregate import average_states
from fedmist.training.jobs import (
    DefenseHooks,
    EpochReport,
    HeldOnClient,
    Federation,
    LocalJob,
    LocalResult,
    PredictJob,
    State,
    XdiffJob,
    lr_at,
)
from fedmist.training.local import for_client, kept_buffers, without_momentum
from fedmist.training.xdiff import xdiff_targets

EMPTY = np.empty(0, np.int64)


@dataclass
class RoundPlan:
    """What one round asks of the clients, and how their replies are combined."""

    parts: list[np.ndarray]  # client c trains on parts[c]
    virtual_targets: bool  # the server forms xdiff targets from phase-1 probabilities (else peers' weights)
    piggyback: bool = True  # phase-1 replies carry the probabilities (else a separate query.predict round)
    reference: np.ndarray = field(default_factory=lambda: EMPTY)  # held-out rows a defense's step may use
    ascent: dict[int, np.ndarray] = field(default_factory=dict)  # FL active attacker's target rows
    weights: dict[int, float] | None = None  # aggregation weight per client; None = equal
    after_average: Callable[[State, int, int], None] | None = None  # (new state, clients averaged, round), in place
    # (global state before, phase-1 states, uploads, normalised weights): FL's recording
    on_uploads: Callable[[int, State, dict[int, State] | None, dict[int, State], dict[int, float]], dict] | None = None
    labels: tuple[str, str] = ("phase 1", "phase 2")  # names of the two phases in dropout messages


def mist_plan(cfg: RunConfig, members: np.ndarray, epoch: int, reference: np.ndarray | None = None) -> RoundPlan:
    """MIST's virtual federation (or private-data mode): members re-partitioned every epoch."""
    return RoundPlan(partition(members, cfg.clients, cfg.seed, epoch, cfg.repartition),
                     virtual_targets=cfg.mode == "virtual", piggyback=cfg.predict_in_train_reply,
                     reference=EMPTY if reference is None else reference)


def run_round(cfg: RunConfig, spec: DefenseHooks, federation: Federation, state: State, plan: RoundPlan,
              epoch: int) -> tuple[State, EpochReport]:
    """One round over ``federation``; returns the new global state and the round's report."""
    lr = lr_at(cfg, epoch)
    parts = plan.parts
    do_xdiff = spec.xdiff and not (cfg.skip_last_xdiff and epoch == cfg.epochs)
    virtual = do_xdiff and plan.virtual_targets
    piggyback = virtual and plan.piggyback
    first, second = plan.labels

    t0 = time.perf_counter()
    # The server needs phase-1 weights only to average them or to record them; when phase 2 follows
    # from the clients' own phase-1 models and the targets come from the piggybacked probabilities,
    # a federation may leave the weights on the clients (LocalJob.upload).
    upload = not (piggyback and plan.on_uploads is None)
    jobs = [LocalJob(c, epoch, lr, for_client(state, c), rows, _others(parts, c) if piggyback else EMPTY,
                     reference_rows=plan.reference, ascent_rows=plan.ascent.get(c, EMPTY), upload=upload)
            for c, rows in enumerate(parts)]
    dropped: dict[int, str] = {}
    local = sorted(federation.local(cfg, jobs), key=lambda r: r.client)
    _note_dropouts(first, [j.client for j in jobs], [r.client for r in local], federation, dropped, cfg)
    if virtual and not piggyback:  # the separate query.predict round
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
        if virtual:
            targets = _targets_from_replies(np.concatenate(parts), parts, local)
            xjobs = [XdiffJob(r.client, epoch, lr, r.state, parts[r.client], targets=targets[r.client]) for r in local]
        else:
            xjobs = [XdiffJob(r.client, epoch, lr, r.state, parts[r.client],
                              peer_states=[p.state for p in local if p.client != r.client]) for r in local]
        finals = sorted(federation.xdiff(cfg, xjobs), key=lambda r: r.client)
        _note_dropouts(second, [j.client for j in xjobs], [r.client for r in finals], federation, dropped, cfg)
        uploads = {r.client: r.state for r in finals}
        xdiff_loss = float(np.mean([r.xdiff for r in finals]))
        xdiff_seconds = float(sum(r.seconds for r in finals))
    else:
        uploads = {r.client: r.state for r in local if not isinstance(r.state, HeldOnClient)}
    t2 = time.perf_counter()
    clients = sorted(uploads)
    kept = kept_buffers(state, uploads)  # keep_optimizer: each client's own momentum, never averaged
    uploads = {c: without_momentum(s) for c, s in uploads.items()}
    if clients:
        new_state, weights = _average(uploads, kept, plan, epoch)
    else:  # phase 2 was skipped after dropouts, and the phase-1 weights had stayed on the clients
        _log(f"epoch {epoch}: no weights to average (the phase-1 weights stayed on the clients); "
             "the global model is kept for this epoch")
        new_state, weights = dict(state), {}
    t3 = time.perf_counter()

    report = EpochReport(epoch, lr, float(np.mean([r.loss for r in local])), xdiff_loss, t1 - t0, t2 - t1, t3 - t2)
    report.extra["client_seconds_local"] = float(sum(r.seconds for r in local))
    report.extra["client_seconds_xdiff"] = xdiff_seconds
    report.extra["dropped"] = sorted(dropped)
    if dropped:
        report.extra["dropout_reasons"] = {str(c): why for c, why in sorted(dropped.items())}
        _log(f"epoch {epoch}: averaged {len(clients)} of {cfg.clients} clients; dropped {sorted(dropped)}")
    if plan.on_uploads is not None:
        phase1 = {r.client: r.state for r in local} if do_xdiff else None
        report.extra.update(plan.on_uploads(epoch, state, phase1, uploads, weights))
    return new_state, report


def _average(uploads: dict[int, State], kept: State, plan: RoundPlan, epoch: int) -> tuple[State, dict[int, float]]:
    """The round's new global state from the uploads (the plan's weights, or equal ones) with the
    clients' ``kept`` buffers, and the normalised weights."""
    clients = sorted(uploads)
    if plan.weights is None:
        weights = {c: 1.0 / len(clients) for c in clients}
        new_state = average_states([uploads[c] for c in clients])
    else:
        total = sum(plan.weights[c] for c in clients)
        weights = {c: plan.weights[c] / total for c in clients}
        new_state = average_states([uploads[c] for c in clients], [weights[c] for c in clients])
    new_state.update(kept)
    if plan.after_average is not None:
        plan.after_average(new_state, len(clients), epoch)
    return new_state, weights


def run_epoch(cfg: RunConfig, spec: DefenseHooks, federation: Federation, state: State, members: np.ndarray,
              epoch: int, reference: np.ndarray | None = None) -> tuple[State, EpochReport]:
    """One MIST epoch (or plain SGD / phase-1-only, as the defense says) over the members."""
    return run_round(cfg, spec, federation, state, mist_plan(cfg, members, epoch, reference), epoch)


def train(cfg: RunConfig, spec: DefenseHooks, federation: Federation, state: State, members: np.ndarray,
          start_epoch: int = 1, on_epoch: Callable[[State, EpochReport], None] | None = None,
          reference: np.ndarray | None = None) -> State:
    """Epochs ``start_epoch..cfg.epochs`` of MIST's loop; ``on_epoch`` evaluates, logs and checkpoints."""
    return train_rounds(cfg, spec, federation, state, lambda e: mist_plan(cfg, members, e, reference),
                        start_epoch, on_epoch)


def train_rounds(cfg: RunConfig, spec: DefenseHooks, federation: Federation, state: State,
                 plan_for: Callable[[int], RoundPlan], start_epoch: int = 1,
                 on_epoch: Callable[[State, EpochReport], None] | None = None) -> State:
    """Rounds ``start_epoch..cfg.epochs``, each planned by ``plan_for(round)``."""
    for epoch in range(start_epoch, cfg.epochs + 1):
        state, report = run_round(cfg, spec, federation, state, plan_for(epoch), epoch)
        if on_epoch is not None:
            on_epoch(state, report)
    return state


def _others(parts: list[np.ndarray], c: int) -> np.ndarray:
    """Rows of every partition but client c's, in partition order (what c predicts on)."""
    return np.concatenate([p for i, p in enumerate(parts) if i != c])


def _targets_from_replies(members: np.ndarray, parts: list[np.ndarray],
                          local: list[LocalResult]) -> dict[int, np.ndarray]:
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
    """Record who did not reply validly (the federation logged why); fail below the quorum.

    The one quorum rule: every client must reply unless ``min_clients`` > 0 says how many suffice."""
    why = getattr(federation, "rejected", {})
    for c in sorted(set(asked) - set(got)):
        dropped.setdefault(c, f"{phase}: {why.get(c, 'no valid reply')}")
    need = quorum(cfg, len(asked))
    if len(got) < need:
        raise FederationError(f"{phase}: valid replies from {sorted(got)} only; {need} needed "
                              f"(min_clients={cfg.min_clients}); missing {sorted(set(asked) - set(got))}")


def quorum(cfg: RunConfig, asked: int) -> int:
    """Valid replies a round of ``asked`` jobs needs: all of them, unless ``min_clients`` > 0 says fewer.

    The one rule, applied by the loop and by the Flower federation while it waits for replies."""
    return asked if cfg.min_clients <= 0 else min(cfg.min_clients, asked)


def _log(msg: str) -> None:
    print(msg, flush=True)
