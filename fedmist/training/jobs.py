"""The types every layer above training shares: what the server asks of a client, what comes
back, the report of one round, and the two protocols a defense's own loop is handed.

The same jobs run in-process (``InProcessFederation``) or as Flower messages (``fedmist.flower``),
so the round loop in ``fedmist.engine.loop`` is written once. A leaf below the defenses: a defense
with a training procedure of its own (SELENA, DMP) uses these types without importing the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from fedmist.config import RunConfig
    from fedmist.data.split import Split

State = dict[str, torch.Tensor]
AUX = "aux/"  # state keys of a defense's own tensors; everything else is the model's state_dict


def model_part(state: State) -> State:
    """The model's own weights (what ``model.pt`` holds), without the defense's ``aux/`` tensors."""
    return {k: v for k, v in state.items() if not k.startswith(AUX)}


def aux_part(state: State) -> State:
    return {k: v for k, v in state.items() if k.startswith(AUX)}


class DefenseHooks(Protocol):
    """What the engine reads of the defense it is handed (``fedmist.defenses.DefenseSpec``)."""

    name: str
    fl_name: str  # the algorithm's name in real FL ("FedAvg", "DP-FedAvg", "MIST-in-FL ...")
    xdiff: bool  # run MIST's phase 2 after phase 1
    local_step: str  # the phase-1 training step (``fedmist.training.steps``)

    def parse_params(self, values: dict[str, Any]) -> Any: ...


@dataclass
class LocalJob:
    """Phase 1: start from ``state``, one pass of SGD on ``train_rows``; then report the phase-1
    model's true-class probabilities on ``predict_rows`` (virtual federation: the peers' rows)."""

    client: int
    epoch: int
    lr: float
    state: State
    train_rows: np.ndarray
    predict_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    step: str = ""  # training step name (fedmist.training.steps); "" = the defense's local_step
    reference_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    soft_targets: np.ndarray | None = None  # (len(train_rows), K) for the distill step
    # FL active attack (fedmist.training.fl_client): rows the attacking participant does gradient ascent on
    ascent_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # False: the server needs only the probabilities (phase 2 follows, from the client's own phase-1
    # weights); a federation whose clients keep those weights may leave them there (HeldOnClient).
    upload: bool = True


class HeldOnClient(dict):
    """An empty State standing for phase-1 weights that stayed on the client (``LocalJob.upload``
    False): phase 2 names them, and nothing on the server may average or inspect them."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


@dataclass
class LocalResult:
    client: int
    state: State
    loss: float
    n: int
    probs: np.ndarray  # aligned with the job's predict_rows
    seconds: float = 0.0  # client compute time, to separate transport overhead from training


@dataclass
class XdiffJob:
    """Phase 2: start from the client's phase-1 ``state``, one pass of λ·xdiff on ``train_rows``.

    Virtual federation: ``targets`` come from the server. Private-data mode: ``targets`` is None and
    ``peer_states`` (the other clients' phase-1 weights) let the client compute them itself.
    """

    client: int
    epoch: int
    lr: float
    state: State
    train_rows: np.ndarray
    targets: np.ndarray | None = None
    peer_states: list[State] | None = None


@dataclass
class XdiffResult:
    client: int
    state: State
    xdiff: float
    n: int
    seconds: float = 0.0


@dataclass
class PredictJob:
    """``query.predict``: the true-class probabilities of ``state`` on ``rows`` (a separate round,
    used when phase-1 replies do not carry them: ``predict_in_train_reply = false``)."""

    client: int
    epoch: int
    state: State
    rows: np.ndarray
    full: bool = False  # True: the whole probability vector (len(rows), K), not the true class's


@dataclass
class PredictResult:
    client: int
    probs: np.ndarray
    seconds: float = 0.0


@dataclass
class EpochReport:
    """What one round (an epoch of MIST, a round of FL) reports to the run that logs and checkpoints it."""

    epoch: int
    lr: float
    local_loss: float
    xdiff_loss: float | None
    time_local: float
    time_xdiff: float
    time_aggregate: float
    extra: dict[str, Any] = field(default_factory=dict)  # numbers, plus ``dropped`` (list of clients)


class Federation(Protocol):
    """Runs a batch of jobs on the clients (concurrently where the transport allows)."""

    def local(self, cfg: "RunConfig", jobs: list[LocalJob]) -> list[LocalResult]: ...

    def xdiff(self, cfg: "RunConfig", jobs: list[XdiffJob]) -> list[XdiffResult]: ...

    def predict(self, cfg: "RunConfig", jobs: list[PredictJob]) -> list[PredictResult]: ...


class TrainingRun(Protocol):
    """The part of an opened run (``fedmist.runs.Run``) a training procedure reads and reports to."""

    cfg: "RunConfig"
    split: "Split"
    state: State
    start_epoch: int

    def on_epoch(self, state: State, report: EpochReport) -> None: ...


# The engine's round loop as handed to a defense's own procedure (DMP trains its teacher with it):
# (federation, state, members, start_epoch, on_epoch) -> final state.
Rounds = Callable[[Federation, State, np.ndarray, int, Callable[[State, EpochReport], None]], State]


def lr_at(cfg: "RunConfig", epoch: int) -> float:
    """Step schedule of Table 7: lr × 0.1 for every milestone already reached; times the cosine
    factor when ``lr_cosine``."""
    lr = step_lr(cfg.lr, cfg.lr_schedule, epoch)
    return lr * cosine_factor(epoch, cfg.epochs) if cfg.lr_cosine else lr


def cosine_factor(epoch: int, epochs: int) -> float:
    """HAMP's artefact's cosine schedule (``lr * 0.5 * (1 + cos(pi * e / (E + 1)))`` for its 0-based
    epoch e), for fedmist's 1-based ``epoch``: 1 at the first epoch, never 0 at the last.

    >>> cosine_factor(1, 50), round(cosine_factor(26, 50), 4), round(cosine_factor(50, 50), 4)
    (1.0, 0.5154, 0.0038)
    """
    return 0.5 * (1 + math.cos(math.pi * (epoch - 1) / (epochs + 1)))


def step_lr(base_lr: float, milestones: list[int], epoch: int) -> float:
    """``base_lr`` × 0.1 for every milestone ``epoch`` is past.

    >>> step_lr(0.1, [2, 4], 1), round(step_lr(0.1, [2, 4], 3), 6), round(step_lr(0.1, [2, 4], 5), 6)
    (0.1, 0.01, 0.001)
    """
    return base_lr * (0.1 ** sum(1 for m in milestones if epoch > m))
