"""What a client does with a job: load weights, call the training math, return weights.

Shared by the Flower ClientApp and the in-process federation, so both compute the same thing.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch

from fedmist.config import RunConfig
from fedmist.training.evaluate import class_probs
from fedmist.training.fl_client import fl_client_round
from fedmist.training.jobs import (
    DefenseHooks,
    LocalJob,
    LocalResult,
    PredictJob,
    PredictResult,
    State,
    XdiffJob,
    XdiffResult,
    aux_part,
    model_part,
)
from fedmist.training.local import OPT_PREFIX, kept_momentum, opt_prefix
from fedmist.training.seeding import PHASE_LOCAL, PHASE_XDIFF, step_rng
from fedmist.training.steps import STEPS, StepContext
from fedmist.training.workspace import Workspace
from fedmist.training.xdiff import true_class_probs, xdiff_epoch


def _state_of(model: torch.nn.Module, aux: State | None = None) -> State:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state.update({k: v.detach().cpu().clone() for k, v in (aux or {}).items()})
    return state


def _momentum(state: State, client: int) -> dict[str, torch.Tensor]:
    """Client ``client``'s kept momentum buffers in ``state``, keyed by parameter name."""
    prefix = opt_prefix(client)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _keeping(cfg: RunConfig, model: torch.nn.Module, buffers: dict[str, torch.Tensor]):
    """``keep_optimizer``: the passes over ``model`` carry the client's buffers that came in the job's
    state (zeros at first, ``initial_momentum``); else, or in a state without them, they start fresh."""
    return kept_momentum(model, buffers) if cfg.keep_optimizer and buffers else nullcontext()


def _with_momentum(state: State, client: int, buffers: dict[str, torch.Tensor]) -> State:
    """``state`` with client ``client``'s momentum buffers (moved to the CPU) under their keys."""
    prefix = opt_prefix(client)
    state.update({prefix + k: v.detach().cpu().clone() for k, v in buffers.items()})
    return state


def run_local(ws: Workspace, cfg: RunConfig, job: LocalJob, spec: DefenseHooks) -> LocalResult:
    """Phase 1 with the defense's training step (plain SGD unless the defense names another)."""
    t0 = time.perf_counter()
    step_name = job.step or spec.local_step
    if step_name not in STEPS:
        raise ValueError(f"unknown training step {step_name!r}; known: {', '.join(sorted(STEPS))}")
    model = ws.model
    model.load_state_dict(model_part(job.state))
    rng = step_rng(cfg.seed, job.epoch, job.client, PHASE_LOCAL)
    ctx = StepContext(model, ws.x, ws.y, job.train_rows, lr=job.lr, batch_size=cfg.batch_size,
                      momentum=cfg.momentum, weight_decay=cfg.weight_decay, mixup_alpha=cfg.mixup_alpha,
                      rng=rng, device=ws.device, epoch=job.epoch, epochs=cfg.epochs,
                      params=spec.parse_params(cfg.params), num_classes=ws.dataset.num_classes,
                      reference=job.reference_rows, soft_targets=job.soft_targets,
                      aux={k: v.to(ws.device) for k, v in aux_part(job.state).items() if not k.startswith(OPT_PREFIX)})
    buffers = _momentum(job.state, job.client)
    with _keeping(cfg, model, buffers):
        loss = STEPS[step_name](ctx)
        if cfg.mode == "fl":  # more local passes, the explicit active attack, DP-FedAvg's clipping
            loss = fl_client_round(ctx, cfg, job, STEPS[step_name], loss)
    if not np.isfinite(loss):
        raise FloatingPointError(f"training step {step_name!r} returned a NaN/Inf loss")
    probs = (true_class_probs(model, ws.x, ws.y, job.predict_rows, device=ws.device)
             if len(job.predict_rows) else np.empty(0, dtype=np.float32))
    return LocalResult(job.client, _with_momentum(_state_of(model, ctx.aux), job.client, buffers), loss,
                       len(job.train_rows), probs, time.perf_counter() - t0)


def targets_from_peers(ws: Workspace, peer_states: list[State], rows: np.ndarray) -> np.ndarray:
    """Private-data mode: t(x) = mean of the peers' true-class probabilities, computed locally."""
    if not peer_states:
        raise ValueError("private-data mode needs the other clients' phase-1 weights")
    acc = np.zeros(len(rows), dtype=np.float64)
    for state in peer_states:
        ws.model.load_state_dict(model_part(state))
        acc += true_class_probs(ws.model, ws.x, ws.y, rows, device=ws.device)
    return (acc / len(peer_states)).astype(np.float32)


def run_xdiff(ws: Workspace, cfg: RunConfig, job: XdiffJob) -> XdiffResult:
    t0 = time.perf_counter()
    if job.targets is None:
        targets = targets_from_peers(ws, job.peer_states or [], job.train_rows)
    else:
        targets = job.targets
    model = ws.model
    model.load_state_dict(model_part(job.state))
    rng = step_rng(cfg.seed, job.epoch, job.client, PHASE_XDIFF)
    buffers = _momentum(job.state, job.client)
    with _keeping(cfg, model, buffers):
        loss = xdiff_epoch(model, ws.x, ws.y, job.train_rows, targets, lam=cfg.lam, lr=job.lr,
                           batch_size=cfg.batch_size, rng=rng, kind=cfg.xdiff_loss,
                           momentum=cfg.momentum, weight_decay=cfg.weight_decay, device=ws.device)
    state = _with_momentum(_state_of(model, aux_part(job.state)), job.client, buffers)
    return XdiffResult(job.client, state, loss, len(job.train_rows), time.perf_counter() - t0)


def run_predict(ws: Workspace, cfg: RunConfig, job: PredictJob) -> PredictResult:
    t0 = time.perf_counter()
    ws.model.load_state_dict(model_part(job.state))
    if job.full:
        probs = class_probs(ws.model, ws.x, job.rows, device=ws.device)
    else:
        probs = true_class_probs(ws.model, ws.x, ws.y, job.rows, device=ws.device)
    return PredictResult(job.client, probs, time.perf_counter() - t0)
