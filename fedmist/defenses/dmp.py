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
audited. Their labels are not used, only the teacher's predictions. We do not synthesise rows from
member pairs (e.g. mixup): that would put individual members into the student's inputs, which DMP's
argument excludes; the synthetic rows below carry the members only through per-feature marginals,
the aggregate a generative model fitted to the members (the MIST paper's GAN, the artefact's CTGAN)
also carries.

Synthetic rows (``synthetic_rows`` = N > 0). The DMP code HAMP's artefact runs on Location
distils into 10,000 synthetic rows (CTGAN samples), all of them, with the teacher's soft labels;
the MIST paper used GAN samples too. Without a GAN, the student here can see N rows drawn from the
feature marginals of the members: every feature of every synthetic row is that feature's value in
a member drawn at random, independently per feature, so a synthetic row mixes many members
(it equals one only by chance) and no member label is read (the marginals are taken over all
members, not per class). Their only labels are the
teacher's soft labels; the lowest-entropy selection (``select_fraction`` / ``select_size``) applies
to them. The rows are a deterministic function of the members' features, so the server (which
labels them with the teacher) and the client (which trains the student, step ``dmp_synthetic``)
draw the same rows; the reference split is then not needed (``reference_size = 0``).

Epochs 1..E (E = ``cfg.epochs``) are the teacher's (evaluated as the model part), E+1..E+D the
student's. During distillation the selected rows and their soft labels live in the state under
``aux/dmp/`` so a checkpoint resumes; the finished run keeps only the student.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fedmist.config import RunConfig
from fedmist.defenses.distillation import (
    STAGE_DISTILL,
    STAGE_FIRST,
    StudentOptimiser,
    distill,
    distill_epochs_of,
    fresh_state,
    phase_lr,
)
from fedmist.defenses.registry import (
    AUX,
    DefenseSpec,
    Knob,
    model_part,
    register_defense,
)
from fedmist.errors import ConfigError
from fedmist.models import build_model
from fedmist.training.batches import gather
from fedmist.training.jobs import (
    EpochReport,
    Federation,
    LocalJob,
    PredictJob,
    Rounds,
    State,
    TrainingRun,
)
from fedmist.training.local import sgd_pass
from fedmist.training.steps import StepContext, register_step
from fedmist.training.workspace import get_workspace

ROWS, TARGETS = AUX + "dmp/rows", AUX + "dmp/targets"
_SALT = 0xD3B  # the student's initial weights differ from the teacher's
_SYNTH_SALT = 0x5E7  # seed word of the synthetic rows
SYNTHETIC_STEP = "dmp_synthetic"


@dataclass(frozen=True)
class DmpParams(StudentOptimiser):
    # Softmax temperature of the teacher's soft labels; 1 as in the DMP reproduction of Chen &
    # Pattabiraman's HAMP artefact (t_softmax = 1). Higher T = softer labels.
    temperature: float = 1.0
    # Share of the reference rows kept (lowest teacher entropy first). DMP sizes its selection per
    # dataset; half is our default.
    select_fraction: float = 0.5
    select_size: int = 0  # keep exactly this many instead (0 = use select_fraction)
    distill_epochs: int = 0  # epochs of the student; 0 = cfg.epochs
    distill_lr: float = 0.0  # the student's learning rate; 0 = cfg.lr
    # > 0: the student trains on this many rows drawn from the members' feature marginals (module
    # docstring) instead of the reference rows; 0 = the reference rows (the default)
    synthetic_rows: int = 0
    # (+ distill_momentum / distill_weight_decay / distill_batch_size, the student's own optimiser:
    # StudentOptimiser; HAMP's artefact distils with momentum 0.99, wd 1e-5 and batch 64.)

    def check(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"dmp's params.temperature must be positive, got {self.temperature}")
        if not 0 < self.select_fraction <= 1:
            raise ConfigError(f"dmp's params.select_fraction must be in (0, 1], got {self.select_fraction}")
        if self.select_size < 0 or self.distill_epochs < 0 or self.distill_lr < 0 or self.synthetic_rows < 0:
            raise ConfigError("dmp's params.select_size, distill_epochs, distill_lr and synthetic_rows must be >= 0")
        self.check_student("dmp")


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
    """How many reference (or synthetic) rows the student trains on; a ConfigError when that is
    none or too many."""
    what = "synthetic" if p.synthetic_rows > 0 else "reference"
    if n_reference == 0:
        raise ConfigError("dmp: this run has no reference rows for its student (reference_size > 0)")
    n = p.select_size if p.select_size > 0 else int(round(p.select_fraction * n_reference))
    if not 1 <= n <= n_reference:
        raise ConfigError(f"dmp selects {n} of {n_reference} {what} rows; give params.select_size "
                          f"or params.select_fraction so that 1 <= selected <= {n_reference} "
                          f"(or raise {'params.synthetic_rows' if what == 'synthetic' else 'reference_size'})")
    return n


def synthetic_features(features: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` rows drawn from the feature marginals of ``features`` (n, d): entry (i, j) is
    column j of a row drawn uniformly at random, independently for every (i, j). Reads no label."""
    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    if len(x) == 0:
        raise ValueError("synthetic rows need at least one member row to draw marginals from")
    donors = np.random.default_rng(seed).integers(0, len(x), size=(count, x.shape[1]))
    return np.ascontiguousarray(x[donors, np.arange(x.shape[1])]).reshape((count, *features.shape[1:]))


def synthetic_seed(members: np.ndarray) -> int:
    """The synthetic rows' seed: a function of the member rows only, so server and client agree."""
    digest = zlib.crc32(np.ascontiguousarray(np.sort(members), dtype=np.int64).tobytes())
    return int(np.random.SeedSequence([_SYNTH_SALT, digest]).generate_state(1)[0])


_SYNTH_CACHE: dict[tuple, np.ndarray] = {}


def synthetic_rows_of(x: torch.Tensor, members: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` synthetic rows of these members (one cached entry per process)."""
    key = (id(x), synthetic_seed(members), len(members), count)
    if key not in _SYNTH_CACHE:
        _SYNTH_CACHE.clear()
        _SYNTH_CACHE[key] = synthetic_features(gather(x, np.asarray(members)).numpy(), count, synthetic_seed(members))
    return _SYNTH_CACHE[key]


@register_step(SYNTHETIC_STEP)
def synthetic_distill_step(ctx: StepContext) -> float:
    """The student's epoch on synthetic rows: ``ctx.rows`` are the members whose feature marginals
    give the rows (never trained on, their labels never read), ``ctx.soft_targets`` has one row per
    synthetic row; rows whose target is all zeros were not selected and are skipped."""
    if ctx.soft_targets is None:
        raise ValueError("the dmp_synthetic step needs the teacher's soft labels")
    targets = np.asarray(ctx.soft_targets, dtype=np.float32)
    chosen = np.flatnonzero(targets.sum(axis=1) > 0)
    feats = torch.from_numpy(synthetic_rows_of(ctx.x, ctx.rows, len(targets))[chosen])
    soft = torch.from_numpy(targets[chosen]).to(ctx.device)
    model = ctx.model
    no_labels = torch.zeros(len(chosen), dtype=torch.long)  # sgd_pass hands labels to the loss; unused

    def loss(pos: np.ndarray, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(model(xb), dim=1)
        return F.kl_div(logp, soft[torch.from_numpy(pos).to(ctx.device)], reduction="batchmean")

    return sgd_pass(model, feats, no_labels, np.arange(len(chosen)), loss, lr=ctx.lr, batch_size=ctx.batch_size,
                    rng=ctx.rng, momentum=ctx.momentum, weight_decay=ctx.weight_decay, device=ctx.device,
                    what="distillation (synthetic rows)")


def teacher_probs(cfg: RunConfig, teacher: State, features: np.ndarray) -> np.ndarray:
    """The teacher's softmax on feature rows that are not dataset rows (the synthetic rows)."""
    ws = get_workspace(cfg)
    model = build_model(ws.model_name, ws.dataset.feature_shape, ws.dataset.num_classes)
    model.load_state_dict(model_part(teacher))
    model.eval()
    with torch.no_grad():
        return np.concatenate([torch.softmax(model(torch.from_numpy(features[i:i + 1024])), dim=1).numpy()
                               for i in range(0, len(features), 1024)])


def synthetic_student_data(cfg: RunConfig, teacher: State, members: np.ndarray) -> np.ndarray:
    """One soft-label row per synthetic row: the teacher's softmax at temperature T on the selected
    (lowest-entropy) rows, zeros on the others."""
    p = _params(cfg)
    probs = teacher_probs(cfg, teacher, synthetic_rows_of(get_workspace(cfg).x, members, p.synthetic_rows))
    keep = lowest_entropy(probs, selection_size(p, p.synthetic_rows))
    targets = np.zeros_like(probs, dtype=np.float32)
    targets[keep] = soften(probs[keep], p.temperature)
    return targets


def distill_synthetic(run: TrainingRun, federation: Federation, student: State, members: np.ndarray,
                      targets: np.ndarray, *, base_lr: float, epochs: int, start: int, keep: State,
                      cfg: RunConfig | None = None) -> State:
    """The student's epochs ``start..epochs`` on the synthetic rows (as ``distill`` does on rows of
    the dataset), reported as run epochs ``cfg.epochs + d``; ``cfg``: the student's config
    (``StudentOptimiser.student_cfg``), else the run's."""
    cfg = cfg or run.cfg
    for d in range(start, epochs + 1):
        t0 = time.perf_counter()
        job = LocalJob(0, cfg.epochs + d, phase_lr(cfg, base_lr, d), student, members, step=SYNTHETIC_STEP,
                       soft_targets=targets)
        (res,) = federation.local(cfg, [job])
        student = res.state
        rep = EpochReport(job.epoch, job.lr, res.loss, None, time.perf_counter() - t0, 0.0, 0.0,
                          {"stage": STAGE_DISTILL, "client_seconds_local": res.seconds})
        run.on_epoch({**student, **(keep if d < epochs else {})}, rep)
    return student


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
    if cfg.reference_size == 0 and _params(cfg).synthetic_rows == 0:
        raise ConfigError("dmp needs reference rows for its student (reference_size > 0, or -1 for the default), "
                          "or params.synthetic_rows > 0")


def train_dmp(run: TrainingRun, federation: Federation, rounds: Rounds) -> State:
    """Teacher epochs (the engine's ``rounds``), selection and soft labels, student epochs, from
    ``run.start_epoch``."""
    cfg, p = run.cfg, _params(run.cfg)
    synthetic = p.synthetic_rows > 0
    # fail before the teacher trains, not after
    selection_size(p, p.synthetic_rows if synthetic else len(run.split.reference))
    if TARGETS in run.state:  # resumed during distillation
        rows, targets = run.state[ROWS].numpy(), run.state[TARGETS].numpy()
        student = model_part(run.state)
    else:
        def report(state: State, rep: EpochReport) -> None:
            rep.extra["stage"] = STAGE_FIRST
            run.on_epoch(state, rep)

        teacher = rounds(federation, model_part(run.state), run.split.members, run.start_epoch, report)
        if synthetic:  # ROWS: the members whose marginals give the rows; TARGETS: one row per synthetic row
            rows, targets = run.split.members, synthetic_student_data(cfg, teacher, run.split.members)
        else:
            rows, targets = student_data(cfg, federation, teacher, run.split.reference)
        student = fresh_state(cfg, _SALT)
    keep = {ROWS: torch.from_numpy(np.ascontiguousarray(rows)), TARGETS: torch.from_numpy(np.ascontiguousarray(targets))}
    base_lr, epochs = p.distill_lr or cfg.lr, distill_epochs_of(cfg, p.distill_epochs)
    start = max(1, run.start_epoch - cfg.epochs)
    train = distill_synthetic if synthetic else distill
    return train(run, federation, student, rows, targets, base_lr=base_lr, epochs=epochs, start=start, keep=keep,
                 cfg=p.student_cfg(cfg))


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
