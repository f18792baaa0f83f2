"""What an FL client does on top of the defense's training step, inside its ``train`` job.

1. ``local_epochs`` passes over its own partition (the first one is the step the engine ran).
2. The explicit active attack (Nasr et al., S&P 2019, "gradient ascent"): when
   ``cfg.active_attack == "client:K"`` and this is client K, it then does ``active_steps``
   full-batch steps of gradient *ascent* on the target rows before uploading, and says so on
   stdout. Members of the other clients' data get their loss pulled back down by their owner's
   next local training; non-members do not.
3. DP-FedAvg (``fl_dp_noise > 0``): the upload is clipped to L2 norm ``fl_dp_clip`` around the
   global model it started from with Flower's own ``compute_clip_model_update`` (the function
   behind ``flwr.clientapp.mod.fixedclipping_mod``), so the server only ever receives clipped
   updates. The server adds the noise (``fedmist.engine.fl``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fedmist.config import RunConfig
from fedmist.training.batches import gather
from fedmist.training.jobs import LocalJob, model_part
from fedmist.training.steps import StepContext


def fl_client_round(ctx: StepContext, cfg: RunConfig, job: LocalJob, step: Callable[[StepContext], float],
                    first_loss: float) -> float:
    """Finish client ``job.client``'s round after the first local pass; returns the mean loss."""
    losses = [first_loss]
    for _ in range(cfg.local_epochs - 1):
        losses.append(step(ctx))
    if is_attacker(cfg, job.client) and len(job.ascent_rows):
        before, after = gradient_ascent(ctx.model, ctx.x, ctx.y, job.ascent_rows, lr=cfg.active_lr,
                                        steps=cfg.active_steps, device=ctx.device)
        print(f"ACTIVE ATTACK (active_attack={cfg.active_attack}): client {job.client}, round {job.epoch}: "
              f"gradient ascent on {len(job.ascent_rows)} target rows, their loss {before:.3f} -> {after:.3f}",
              flush=True)
    if cfg.fl_dp_noise > 0:
        clip_update_(ctx.model, model_part(job.state), cfg.fl_dp_clip)
    return float(np.mean(losses))


def is_attacker(cfg: RunConfig, client: int) -> bool:
    return bool(cfg.active_attack) and cfg.active_attack.strip() == f"client:{client}"


def gradient_ascent(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, *, lr: float,
                    steps: int, device: str = "cpu") -> tuple[float, float]:
    """``steps`` full-batch steps *up* the mean cross-entropy of ``rows``; returns (loss before, after)."""
    xb, yb = gather(x, rows, device), y[torch.from_numpy(rows)].to(device)
    model.train()
    with torch.no_grad():
        before = float(F.cross_entropy(model(xb), yb))
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.add_(p.grad, alpha=lr)  # + : ascent
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = float(F.cross_entropy(model(xb), yb))
    return before, after


def clip_update_(model: torch.nn.Module, start: dict[str, torch.Tensor], clip: float) -> float:
    """Clip ``model``'s update (its weights − ``start``) to L2 norm ``clip`` in place, with Flower's
    ``compute_clip_model_update``; returns the update's norm before clipping."""
    from flwr.supercore.differential_privacy import compute_clip_model_update, get_norm

    state = model.state_dict()
    keys = [k for k, v in state.items() if v.is_floating_point()]
    new = [state[k].detach().cpu().numpy().astype(np.float64) for k in keys]
    old = [start[k].detach().cpu().numpy().astype(np.float64) for k in keys]
    norm = get_norm([a - b for a, b in zip(new, old)])
    compute_clip_model_update(new, old, clip)
    with torch.no_grad():
        for k, arr in zip(keys, new):
            state[k].copy_(torch.from_numpy(arr).to(state[k].dtype))
    return norm
