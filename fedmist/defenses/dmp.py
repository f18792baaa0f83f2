"""DMP, Distillation for Membership Privacy (Shejwalkar & Houmansadr, AAAI 2021).

A teacher trains unprotected on the members (plain SGD, a 1-client federation, ``cfg.epochs``
epochs: exactly an SGD run's loop). It then labels a reference set the student may see: of the
reference rows, DMP keeps those on which the teacher's prediction has the lowest entropy (they
leak least about the members), and their soft labels are the teacher's softmax at temperature T.
A fresh student trains only on those selected rows against those labels (the ``distill`` step,
``distill_epochs`` epochs): it never sees a member with its label, which is the defense.

Reference data. DMP assumes unlabelled data from the members' distribution; the MIST paper, with
none, drew samples from a GAN trained on the members. A GAN is out of scope here: the reference
rows are real rows held out of the training budget (``reference_fraction`` = 0.5 of it by default,
``reference_size`` on the command line to change it), never used as labelled members and never
audited. Their labels are not used, only the teacher's predictions. We do not synthesise extra
reference rows (e.g. mixup of member pairs): that would put member information into the student's
inputs, which DMP's argument excludes; when the held-out set is small, raise ``reference_size``.

Epochs 1..E (E = ``cfg.epochs``) are the teacher's (evaluated as the model part), E+1..E+D the
student's. During distillation the selected rows and their soft labels live in the state under
``aux/dmp/`` so a checkpoint resumes; the finished run keeps only the student.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedmist.config import RunConfig
from fedmist.defenses.distillation import (
    STAGE_FIRST,
    distill,
    distill_epochs_of,
    fresh_state,
)
from fedmist.defenses.registry import AUX, DefenseSpec, Knob, model_part, register_defense
from fedmist.errors import ConfigError
from fedmist.training.jobs import (
    EpochReport,
    Federation,
    PredictJob,
    Rounds,
    State,
    TrainingRun,
)

ROWS, TARGETS = AUX + "dmp/rows", AUX + "dmp/targets"
_SALT = 0xD3B  # the student's initial weights differ from the teacher's


@dataclass(frozen=True)
class DmpParams:
    # Softmax temperature of the teacher's soft labels; 1 as in the DMP reproduction of Chen &
    # Pattabiraman's HAMP artefact (t_softmax = 1). Higher T = softer labels.
    temperature: float = 1.0
    # Share of the reference rows kept (lowest teacher entropy first). DMP sizes its selection per
    # dataset; half is our default.
    select_fraction: float = 0.5
    select_size: int = 0  # keep exactly this many instead (0 = use select_fraction)
    distill_epochs: int = 0  # epochs of the student; 0 = cfg.epochs
    distill_lr: float = 0.0  # the student's learning rate; 0 = cfg.lr

    def check(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"dmp's params.temperature must be positive, got {self.temperature}")
        if not 0 < self.select_fraction <= 1:
            raise ConfigError(f"dmp's params.select_fraction must be in (0, 1], got {self.select_fraction}")
        if self.select_size < 0 or self.distill_epochs < 0 or self.distill_lr < 0:
            raise ConfigError("dmp's params.select_size, distill_epochs and distill_lr must be >= 0")


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of a (n, classes) probability matrix; 0·log 0 = 0."""
    p = np.asarray(probs, dtype=np.float64)
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=1)


def lowest_entropy(probs: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` rows with the lowest entropy, lowest first (ties: earlier row first)."""
    return np.argsort(entropy(probs), kind="stable")[:n]


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) from p = softmax(z): p^(1/T), renormalised (float32 rows summing to 1)."""
    p = np.asarray(probs, dtype=np.float64) ** (1.0 / temperature)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def selection_size(p: DmpParams, n_reference: int) -> int:
    """How many reference rows the student trains on; a ConfigError when that is none or too many."""
    if n_reference == 0:
        raise ConfigError("dmp: this run has no reference rows for its student (reference_size > 0)")
    n = p.select_size if p.select_size > 0 else int(round(p.select_fraction * n_reference))
    if not 1 <= n <= n_reference:
        raise ConfigError(f"dmp selects {n} of {n_reference} reference rows; give params.select_size "
                          f"or params.select_fraction so that 1 <= selected <= {n_reference} (or raise reference_size)")
    return n


def student_data(cfg: RunConfig, federation: Federation, teacher: State,
                 reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The student's rows (the selected reference rows) and their soft labels, from one
    ``query.predict`` of the teacher on every reference row."""
    p = _params(cfg)
    (res,) = federation.predict(cfg, [PredictJob(0, cfg.epochs, teacher, reference, full=True)])
    keep = lowest_entropy(res.probs, selection_size(p, len(reference)))
    return reference[keep], soften(res.probs[keep], p.temperature)


def _params(cfg: RunConfig) -> DmpParams:
    return DMP.parse_params(cfg.params)


def _check(cfg: RunConfig) -> None:
    if cfg.reference_size == 0:
        raise ConfigError("dmp needs reference rows for its student (reference_size > 0, or -1 for the default)")


def train_dmp(run: TrainingRun, federation: Federation, rounds: Rounds) -> State:
    """Teacher epochs (the engine's ``rounds``), selection and soft labels, student epochs, from
    ``run.start_epoch``."""
    cfg, p = run.cfg, _params(run.cfg)
    selection_size(p, len(run.split.reference))  # fail before the teacher trains, not after
    if TARGETS in run.state:  # resumed during distillation
        rows, targets = run.state[ROWS].numpy(), run.state[TARGETS].numpy()
        student = model_part(run.state)
    else:
        def report(state: State, rep: EpochReport) -> None:
            rep.extra["stage"] = STAGE_FIRST
            run.on_epoch(state, rep)

        teacher = rounds(federation, model_part(run.state), run.split.members, run.start_epoch, report)
        rows, targets = student_data(cfg, federation, teacher, run.split.reference)
        student = fresh_state(cfg, _SALT)
    keep = {ROWS: torch.from_numpy(np.ascontiguousarray(rows)), TARGETS: torch.from_numpy(np.ascontiguousarray(targets))}
    return distill(run, federation, student, rows, targets, base_lr=p.distill_lr or cfg.lr,
                   epochs=distill_epochs_of(cfg, p.distill_epochs), start=max(1, run.start_epoch - cfg.epochs),
                   keep=keep)


DMP = register_defense(DefenseSpec(
    name="dmp",
    description="DMP: unprotected teacher, student distilled on its lowest-entropy reference predictions",
    fixed_clients=1,
    reference_fraction=0.5,
    check_extra=_check,
    params=DmpParams,
    train_loop=train_dmp,
    # softer teacher labels = less of the teacher's memorisation in the student (our choice of knob;
    # DMP's paper tunes the reference set and temperature per dataset)
    tune_knob=Knob("params.temperature", 0.5, 16.0),
    total_epochs=lambda cfg: cfg.epochs + distill_epochs_of(cfg, _params(cfg).distill_epochs),
))
