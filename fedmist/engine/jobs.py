"""What the server asks of a client and what comes back, independent of the transport.

The same jobs run in-process (``InProcessFederation``) or as Flower messages (``server/app.py``),
so the epoch loop in ``fedmist.engine.loop`` is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

State = dict[str, torch.Tensor]


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
    # FL active attack (fedmist.fl.client): rows the attacking participant does gradient ascent on
    ascent_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


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
