"""Train a stack of same-recipe models at once: batched matmuls over stacked weights.

One small model leaves a GPU idle; S shadow models stacked along a new leading axis
(``torch.func.vmap`` over ``functional_call``) turn S small GEMMs into one batched GEMM. Each model
keeps its own rows, seed and batch order, so the result equals training them one by one (up to
floating-point rounding of batched vs single GEMMs; a test pins it). Supports the recipes without
phase 2 on one client (SGD); plain momentum SGD as in ``fedmist.training.local``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from fedmist.training.batches import gather, shuffled_batches

State = dict[str, torch.Tensor]


def stack_states(states: Sequence[State]) -> State:
    return {k: torch.stack([s[k] for s in states]) for k in states[0]}


def unstack_state(stacked: State, n: int) -> list[State]:
    return [{k: v[i].detach().clone() for k, v in stacked.items()} for i in range(n)]


def stacked_local_epoch(model: nn.Module, params: State, x: torch.Tensor, y: torch.Tensor,
                        rows: Sequence[np.ndarray], rngs: Sequence[np.random.Generator], *, lr: float,
                        batch_size: int, momentum: float = 0.0, weight_decay: float = 0.0,
                        device: str = "cpu") -> tuple[State, np.ndarray]:
    """One SGD pass for each of S models (stacked ``params``, leading axis S) over its own ``rows``.

    All models must have the same number of rows (their batches line up). Returns the new stacked
    parameters and each model's mean loss. Momentum buffers start at zero, as a fresh optimizer.
    """
    S = len(rows)
    if len({len(r) for r in rows}) != 1:
        raise ValueError("stacked training needs the same number of rows for every model")

    def loss_fn(p: State, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (xb,)), yb)

    grad_and_loss = vmap(grad(loss_fn, has_aux=False), in_dims=(0, 0, 0))
    batched_loss = vmap(loss_fn, in_dims=(0, 0, 0))
    orders = [list(shuffled_batches(len(r), batch_size, g)) for r, g in zip(rows, rngs)]
    bufs: State | None = None
    totals = np.zeros(S)
    for step in range(len(orders[0])):
        batch_rows = [r[o[step]] for r, o in zip(rows, orders)]
        xb = torch.stack([gather(x, b, device) for b in batch_rows])
        yb = torch.stack([y[torch.from_numpy(b)].to(device) for b in batch_rows])
        with torch.no_grad():
            totals += batched_loss(params, xb, yb).cpu().numpy() * len(batch_rows[0])
        grads = grad_and_loss(params, xb, yb)
        with torch.no_grad():
            if weight_decay:
                grads = {k: g + weight_decay * params[k] for k, g in grads.items()}
            if momentum:
                bufs = grads if bufs is None else {k: momentum * bufs[k] + g for k, g in grads.items()}
                step_dir = bufs
            else:
                step_dir = grads
            params = {k: params[k] - lr * step_dir[k] for k in params}
    return params, totals / len(rows[0])


def train_stacked(model: nn.Module, init: Sequence[State], x: torch.Tensor, y: torch.Tensor,
                  rows: Sequence[np.ndarray], epochs: int, rng_for: Callable[[int, int], np.random.Generator],
                  lr_for: Callable[[int], float], **sgd: float) -> list[State]:
    """``epochs`` passes for each model; ``rng_for(model_index, epoch)`` gives its batch order and
    ``lr_for(epoch)`` the learning rate (step schedules)."""
    params = stack_states(init)
    for epoch in range(1, epochs + 1):
        rngs = [rng_for(i, epoch) for i in range(len(rows))]
        params, _ = stacked_local_epoch(model, params, x, y, rows, rngs, lr=lr_for(epoch), **sgd)
    return unstack_state(params, len(rows))
