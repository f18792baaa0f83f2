"""SELENA (Tang et al., USENIX Security 2022): Split-AI ensemble, then self-distillation.

Split-AI: K sub-models; each member is left out of exactly L of them (a seeded draw per member,
as in SELENA's code, K=25 and L=10 there) and sub-model k trains on the members it is not left
out of. Here that is a Flower federation of K clients, client k training its own sub-model with
plain SGD for ``cfg.epochs`` epochs and no averaging. A member's soft label is the mean
probability vector of the L sub-models that never saw it (SELENA's code averages their logits
instead; the mean of probabilities is the paper's "average of predictions" and stays a
distribution). Self-distillation: a fresh model (the run's seeded initial weights) trains on all
members against those soft labels for ``distill_epochs`` epochs on client 0.

Epochs 1..E (E = ``cfg.epochs``) are sub-model epochs: their report's loss is the sub-models' mean
and the model evaluated (and saved as the model part of a checkpoint) is sub-model 0, a progress
indicator only. Epochs E+1..E+D are distillation epochs of the final model. While training, the
sub-models live in the state under ``aux/selena/sub{k}/`` and, during distillation, the soft labels
under ``aux/selena/targets``, so a checkpoint holds everything ``--resume`` needs; the finished run
keeps only the distilled model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from fedmist.config import RunConfig
from fedmist.defenses.distillation import (
    STAGE_FIRST,
    StudentOptimiser,
    distill,
    distill_epochs_of,
    fresh_state,
    prefixed,
    unprefixed,
)
from fedmist.defenses.registry import AUX, DefenseSpec, Knob, model_part, register_defense
from fedmist.errors import ConfigError
from fedmist.training.jobs import (
    EpochReport,
    Federation,
    LocalJob,
    PredictJob,
    Rounds,
    State,
    TrainingRun,
    lr_at,
)
from fedmist.training.workspace import initial_weights

PREFIX = AUX + "selena/"
TARGETS = PREFIX + "targets"
_SALT = 0x5E1E  # separates SELENA's draws from every other use of the run seed


@dataclass(frozen=True)
class SelenaParams(StudentOptimiser):
    K: int = 25  # sub-models (SELENA's code default)
    L: int = 10  # sub-models each member is left out of (SELENA's code default)
    distill_epochs: int = 0  # epochs of self-distillation; 0 = cfg.epochs
    distill_lr: float = 0.0  # learning rate of self-distillation; 0 = cfg.lr

    def check(self) -> None:
        if self.K < 2:
            raise ConfigError(f"selena needs params.K >= 2 sub-models, got {self.K}")
        if not 1 <= self.L < self.K:
            raise ConfigError(f"selena needs 1 <= params.L < params.K ({self.K}), got L={self.L}")
        if self.distill_epochs < 0 or self.distill_lr < 0:
            raise ConfigError("selena's params.distill_epochs and params.distill_lr must be >= 0")
        self.check_student("selena")


def leave_out(n: int, K: int, L: int, seed: int) -> np.ndarray:
    """(n, K) bool: ``[i, k]`` = member i is left out of sub-model k; exactly L per row, seeded.

    >>> m = leave_out(5, 4, 2, seed=0)
    >>> m.shape, m.sum(axis=1).tolist()
    ((5, 4), [2, 2, 2, 2, 2])
    """
    keys = np.random.default_rng([seed, _SALT]).random((n, K))
    out = np.zeros((n, K), dtype=bool)
    out[np.arange(n)[:, None], np.argsort(keys, axis=1)[:, :L]] = True
    return out


def average_left_out(left_out: np.ndarray, probs: list[np.ndarray]) -> np.ndarray:
    """Soft labels (n, classes): per member, the mean of the probability vectors of the sub-models
    it was left out of. ``probs[k]`` holds sub-model k's vectors on ``np.flatnonzero(left_out[:, k])``."""
    n, K = left_out.shape
    classes = max(p.shape[1] for p in probs if p.size)
    acc = np.zeros((n, classes), dtype=np.float64)
    for k in range(K):
        rows = np.flatnonzero(left_out[:, k])
        if probs[k].shape != (len(rows), classes) and len(rows):
            raise ValueError(f"sub-model {k}: {probs[k].shape} probabilities for {len(rows)} left-out members")
        if len(rows):
            acc[rows] += probs[k]
    return (acc / left_out.sum(axis=1, keepdims=True)).astype(np.float32)


def _params(cfg: RunConfig) -> SelenaParams:
    return SELENA.parse_params(cfg.params)


def _sub_prefix(k: int) -> str:
    return f"{PREFIX}sub{k}/"


def _pack_subs(subs: list[State]) -> State:
    """The checkpointed state of the sub-model stage: sub-model 0 as the (evaluated) model part,
    every sub-model under its ``aux/selena/sub{k}/`` prefix."""
    state = dict(subs[0])
    for k, sub in enumerate(subs):
        state.update(prefixed(sub, _sub_prefix(k)))
    return state


def _unpack_subs(state: State, K: int) -> list[State]:
    subs = [unprefixed(state, _sub_prefix(k)) for k in range(K)]
    if not all(subs):
        raise ValueError(f"the checkpoint does not hold all {K} SELENA sub-models")
    return subs


def train_submodels(run: TrainingRun, federation: Federation, subs: list[State], members: np.ndarray,
                    left_out: np.ndarray) -> list[State]:
    """Sub-model epochs ``run.start_epoch..cfg.epochs``: one round of K jobs each, client k trains
    sub-model k on its members, no averaging."""
    cfg = run.cfg
    train_rows = [members[~left_out[:, k]] for k in range(len(subs))]
    if any(len(rows) == 0 for rows in train_rows):
        raise ConfigError(f"selena: a sub-model has no training rows ({len(members)} members, K={len(subs)})")
    for epoch in range(run.start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = lr_at(cfg, epoch)
        jobs = [LocalJob(k, epoch, lr, sub, train_rows[k], step="sgd") for k, sub in enumerate(subs)]
        results = sorted(federation.local(cfg, jobs), key=lambda r: r.client)
        if [r.client for r in results] != list(range(len(subs))):
            raise RuntimeError(f"selena epoch {epoch}: replies from clients {[r.client for r in results]}")
        subs = [r.state for r in results]
        rep = EpochReport(epoch, lr, float(np.mean([r.loss for r in results])), None, time.perf_counter() - t0,
                          0.0, 0.0, {"stage": STAGE_FIRST,
                                     "client_seconds_local": float(sum(r.seconds for r in results))})
        run.on_epoch(_pack_subs(subs), rep)
    return subs


def soft_labels(cfg: RunConfig, federation: Federation, subs: list[State], members: np.ndarray,
                left_out: np.ndarray) -> np.ndarray:
    """One ``query.predict`` round: client k returns sub-model k's probability vectors on the members
    left out of it; each member's soft label averages the L sub-models that never trained on it."""
    jobs = [PredictJob(k, cfg.epochs, sub, members[left_out[:, k]], full=True) for k, sub in enumerate(subs)]
    probs = {r.client: r.probs for r in federation.predict(cfg, jobs)}
    if sorted(probs) != list(range(len(subs))):
        raise RuntimeError(f"selena soft labels: replies from clients {sorted(probs)}")
    return average_left_out(left_out, [probs[k] for k in range(len(subs))])


def train_selena(run: TrainingRun, federation: Federation, rounds: Rounds) -> State:
    """The whole procedure from ``run.start_epoch`` (a fresh run or a resumed checkpoint)."""
    cfg, p = run.cfg, _params(run.cfg)
    members = run.split.members
    left_out = leave_out(len(members), p.K, p.L, cfg.seed)
    if TARGETS in run.state:  # resumed during distillation
        targets = run.state[TARGETS].numpy()
        student = model_part(run.state)
    else:
        subs = (_unpack_subs(run.state, p.K) if run.start_epoch > 1
                else [fresh_state(cfg, _SALT, k) for k in range(p.K)])
        subs = train_submodels(run, federation, subs, members, left_out)
        targets = soft_labels(cfg, federation, subs, members, left_out)
        student = initial_weights(cfg)
    start = max(1, run.start_epoch - cfg.epochs)
    return distill(run, federation, student, members, targets, base_lr=p.distill_lr or cfg.lr,
                   epochs=distill_epochs_of(cfg, p.distill_epochs), start=start,
                   keep={TARGETS: torch.from_numpy(np.ascontiguousarray(targets))},
                   cfg=p.student_cfg(cfg))


SELENA = register_defense(DefenseSpec(
    name="selena",
    description="SELENA: Split-AI (K sub-models, each member left out of L) then self-distillation",
    params=SelenaParams,
    clients_from_params=lambda p: p.K,
    train_loop=train_selena,
    # our choice of knob: each member's soft label averages the L sub-models that never saw it; with
    # K = 25 fixed, L trades how many sub-models vote against how much data each trains on
    tune_knob=Knob("params.L", 2, 20, log=False, integer=True),
    total_epochs=lambda cfg: cfg.epochs + distill_epochs_of(cfg, _params(cfg).distill_epochs),
))
