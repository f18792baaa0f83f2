"""What SELENA and DMP share: a first phase of ordinary models, then a student distilled from them.

Both number their epoch reports in one sequence so checkpoints and ``--resume`` work unchanged:
epochs ``1..cfg.epochs`` are the first phase (SELENA's sub-models, DMP's teacher) and epochs
``cfg.epochs+1 .. cfg.epochs+distill_epochs`` the student's distillation (``stage`` 1 or 2 in
each ``metrics.json`` row). The distillation's lr schedule restarts at its own epoch 1.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from fedmist.config import RunConfig
from fedmist.errors import ConfigError
from fedmist.models import build_model
from fedmist.training.jobs import (
    EpochReport,
    Federation,
    LocalJob,
    State,
    TrainingRun,
    step_lr,
)
from fedmist.training.workspace import get_workspace

STAGE_FIRST, STAGE_DISTILL = 1.0, 2.0


def distill_epochs_of(cfg: RunConfig, distill_epochs: int) -> int:
    """The student's epochs: the defense's ``distill_epochs`` knob, or ``cfg.epochs`` when it is 0."""
    return distill_epochs if distill_epochs > 0 else cfg.epochs


def fresh_state(cfg: RunConfig, *words: int) -> State:
    """Freshly initialised model weights, seeded by (run seed, *words): reproducible in any process."""
    ws = get_workspace(cfg)
    seed = int(np.random.SeedSequence([cfg.seed, *words]).generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))
    torch.manual_seed(seed)
    model = build_model(ws.model_name, ws.dataset.feature_shape, ws.dataset.num_classes)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def prefixed(state: State, prefix: str) -> State:
    return {prefix + k: v for k, v in state.items()}


def unprefixed(state: State, prefix: str) -> State:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def phase_lr(cfg: RunConfig, base_lr: float, phase_epoch: int) -> float:
    """``base_lr`` under the recipe's step schedule (``lr_at``), counted from the phase's own first epoch."""
    return step_lr(base_lr, cfg.lr_schedule, phase_epoch)


def student_cfg(cfg: RunConfig, momentum: float = -1.0, weight_decay: float = -1.0,
                batch_size: int = 0) -> RunConfig:
    """The run's config with the student's own optimiser settings (-1, or 0 for the batch size: the
    first phase's). Why: SELENA's and DMP's reference code train the first phase with plain SGD and
    the student with momentum 0.99 and weight decay (HAMP's artefact, location/train-selena.py:430,
    location/train-org-dmp.py:419), and fedmist's DMP teacher is the SGD baseline's recipe."""
    changes = {k: v for k, v in (("momentum", momentum), ("weight_decay", weight_decay)) if v >= 0}
    if batch_size > 0:
        changes["batch_size"] = batch_size
    return dataclasses.replace(cfg, **changes) if changes else cfg


def check_student_optimiser(defense: str, momentum: float, weight_decay: float, batch_size: int) -> None:
    """ConfigError naming the bad ``params.distill_*`` value of ``defense``."""
    if not (momentum == -1 or 0 <= momentum < 1):
        raise ConfigError(f"{defense}'s params.distill_momentum must be in [0, 1) or -1 (the run's), got {momentum}")
    if not (weight_decay == -1 or weight_decay >= 0):
        raise ConfigError(f"{defense}'s params.distill_weight_decay must be >= 0 or -1 (the run's), "
                          f"got {weight_decay}")
    if batch_size < 0:
        raise ConfigError(f"{defense}'s params.distill_batch_size must be >= 1 or 0 (the run's), got {batch_size}")


def distill(run: TrainingRun, federation: Federation, student: State, rows: np.ndarray, targets: np.ndarray, *,
            base_lr: float, epochs: int, start: int = 1, keep: State | None = None,
            cfg: RunConfig | None = None) -> State:
    """Distillation epochs ``start..epochs`` of the student on client 0 (reported as run epochs
    ``cfg.epochs + d``); ``keep`` (``aux/`` tensors) rides along in every checkpoint but the last so
    a resumed run finds its soft labels; ``cfg``: the student's config (``student_cfg``), else the
    run's. Returns the student's weights."""
    cfg, keep = cfg or run.cfg, keep or {}
    if len(rows) != len(targets):
        raise ValueError(f"{len(rows)} distillation rows but {len(targets)} soft labels")
    for d in range(start, epochs + 1):
        epoch = cfg.epochs + d
        t0 = time.perf_counter()
        job = LocalJob(0, epoch, phase_lr(cfg, base_lr, d), student, rows, step="distill", soft_targets=targets)
        (res,) = federation.local(cfg, [job])
        student = res.state
        rep = EpochReport(epoch, job.lr, res.loss, None, time.perf_counter() - t0, 0.0, 0.0,
                          {"stage": STAGE_DISTILL, "client_seconds_local": res.seconds})
        run.on_epoch({**student, **(keep if d < epochs else {})}, rep)  # the last checkpoint: the model only
    return student
