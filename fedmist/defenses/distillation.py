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


@dataclasses.dataclass(frozen=True)
class StudentOptimiser:
    """The student's own optimiser, ``params.distill_*`` of SELENA and DMP (-1, or 0 for the batch
    size: the first phase's). Why: their reference code trains the first phase with plain SGD and
    the student with momentum 0.99 and weight decay (HAMP's artefact, location/train-selena.py:430,
    location/train-org-dmp.py:419), and fedmist's DMP teacher is the SGD baseline's recipe."""

    distill_momentum: float = -1.0  # the student's SGD momentum; -1 = cfg.momentum
    distill_weight_decay: float = -1.0  # the student's weight decay; -1 = cfg.weight_decay
    distill_batch_size: int = 0  # the student's batch size; 0 = cfg.batch_size

    def check_student(self, defense: str) -> None:
        """ConfigError naming the bad ``params.distill_*`` value of ``defense``."""
        m, wd, b = self.distill_momentum, self.distill_weight_decay, self.distill_batch_size
        if not (m == -1 or 0 <= m < 1):
            raise ConfigError(f"{defense}'s params.distill_momentum must be in [0, 1) or -1 (the run's), got {m}")
        if not (wd == -1 or wd >= 0):
            raise ConfigError(f"{defense}'s params.distill_weight_decay must be >= 0 or -1 (the run's), got {wd}")
        if b < 0:
            raise ConfigError(f"{defense}'s params.distill_batch_size must be >= 1 or 0 (the run's), got {b}")

    def student_cfg(self, cfg: RunConfig) -> RunConfig:
        """The run's config with these settings for the student's jobs."""
        changes = {k: v for k, v in (("momentum", self.distill_momentum),
                                     ("weight_decay", self.distill_weight_decay)) if v >= 0}
        if self.distill_batch_size > 0:
            changes["batch_size"] = self.distill_batch_size
        return dataclasses.replace(cfg, **changes) if changes else cfg


def distill(run: TrainingRun, federation: Federation, student: State, rows: np.ndarray, targets: np.ndarray, *,
            base_lr: float, epochs: int, start: int = 1, keep: State | None = None,
            cfg: RunConfig | None = None) -> State:
    """Distillation epochs ``start..epochs`` of the student on client 0 (reported as run epochs
    ``cfg.epochs + d``); ``keep`` (``aux/`` tensors) rides along in every checkpoint but the last so
    a resumed run finds its soft labels; ``cfg``: the student's config (``StudentOptimiser.student_cfg``), else the
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
