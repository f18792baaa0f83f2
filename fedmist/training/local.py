"""Phase 1 of MIST (and plain SGD): one pass of minibatch SGD over a client's partition."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmist.training.batches import gather, shuffled_batches


# ``keep_optimizer``: client c's SGD momentum buffers live in the training state under
# ``aux/opt/client{c}/<parameter name>`` (the engine hands each client its own and never averages them).
OPT_PREFIX = "aux/opt/"
_KEPT: ContextVar[tuple[nn.Module, dict[str, torch.Tensor]] | None] = ContextVar("kept_momentum", default=None)


def opt_prefix(client: int) -> str:
    """State-key prefix of client ``client``'s momentum buffers.

    >>> opt_prefix(3)
    'aux/opt/client3/'
    """
    return f"{OPT_PREFIX}client{client}/"


def initial_momentum(model: nn.Module, clients: int) -> dict[str, torch.Tensor]:
    """Zero momentum buffers of every client, for a training state that keeps them from epoch 1.

    A zero buffer is exactly a fresh optimizer's first step (SGD without dampening sets buf = g,
    and 0.9 * 0 + g = g), and it gives every client's replies the same state keys from the start.
    """
    return {opt_prefix(c) + name: torch.zeros_like(p, device="cpu")
            for c in range(clients) for name, p in model.named_parameters() if p.requires_grad}


def for_client(state: dict[str, torch.Tensor], client: int) -> dict[str, torch.Tensor]:
    """``state`` without the other clients' momentum buffers (what client ``client`` is sent)."""
    mine = opt_prefix(client)
    return {k: v for k, v in state.items() if not k.startswith(OPT_PREFIX) or k.startswith(mine)}


def without_momentum(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without any client's momentum buffers (what is averaged)."""
    return {k: v for k, v in state.items() if not k.startswith(OPT_PREFIX)}


def kept_buffers(before: dict[str, torch.Tensor], uploads: dict[int, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Every client's momentum buffers after a round, never averaged: client c's from its own
    upload, those of a client that did not reply as they were in ``before``.

    >>> t = torch.zeros(1)
    >>> sorted(kept_buffers({"aux/opt/client1/w": t, "w": t}, {0: {"aux/opt/client0/w": t, "w": t}}))
    ['aux/opt/client0/w', 'aux/opt/client1/w']
    """
    out = {k: v for k, v in before.items() if k.startswith(OPT_PREFIX)}
    for c, state in uploads.items():
        mine = opt_prefix(c)
        out.update({k: v for k, v in state.items() if k.startswith(mine)})
    return out


@contextmanager
def kept_momentum(model: nn.Module, buffers: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every ``sgd_pass`` over ``model`` starts its optimizer from the momentum
    buffers in ``buffers`` (keyed by parameter name; absent = a fresh start) and writes them back
    when it ends, as one optimizer kept across phases and epochs would (the authors' code).

    Passes over any other module (a defense's own networks) are not affected. ``buffers`` is
    updated in place; the same dict is yielded.
    """
    token = _KEPT.set((model, buffers))
    try:
        yield buffers
    finally:
        _KEPT.reset(token)


def _load_momentum(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor] | None:
    kept = _KEPT.get()
    if kept is None or kept[0] is not model:
        return None
    buffers = kept[1]
    for name, p in model.named_parameters():
        if name in buffers:
            opt.state[p]["momentum_buffer"] = buffers[name].to(device=p.device, dtype=p.dtype).clone()
    return buffers


def _store_momentum(model: nn.Module, opt: torch.optim.Optimizer, buffers: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            buffers[name] = buf.detach().clone()


def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Fresh SGD optimizer: the paper's Algorithm 1 restarts each phase from plain weights
    (``sgd_pass`` reloads kept momentum buffers into it under ``kept_momentum``).

    The fused kernel updates all parameters in one pass over memory (~15 % faster per epoch for
    the Location MLP on CPU, where the momentum update is memory-bound); plain SGD where a device
    has no fused kernel.
    """
    try:
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def mixup_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, alpha: float, rng: np.random.Generator) -> torch.Tensor:
    """Mixup (Zhang et al. 2018): train on a convex mix of two examples and of their labels."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(yb))).to(yb.device)
    out = model(lam * xb + (1 - lam) * xb[perm])
    return lam * F.cross_entropy(out, yb) + (1 - lam) * F.cross_entropy(out, yb[perm])


BatchLoss = Callable[[np.ndarray, torch.Tensor, torch.Tensor], torch.Tensor]


def sgd_pass(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: np.ndarray,
    batch_loss: BatchLoss,
    *,
    lr: float,
    batch_size: int,
    rng: np.random.Generator,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    device: str = "cpu",
    scale: float = 1.0,
    what: str = "training",
    hint: str = "lr too high?",
) -> float:
    """One pass of minibatch SGD over ``x[indices]`` in a seeded random order, minimising
    ``scale * batch_loss(pos, xb, yb)`` (``pos``: the batch's positions in ``indices``, for
    per-example side data); returns the mean unscaled loss. Every training step of fedmist
    (SGD, xdiff, the defenses' losses) is this loop with its own loss, so they differ only there.
    Modifies ``model`` in place. Inside ``kept_momentum(model, ...)`` the optimizer's momentum
    buffers are carried in and out (else every pass starts fresh).
    """
    model.train()
    opt = make_optimizer(model, lr, momentum, weight_decay)
    kept = _load_momentum(model, opt) if momentum else None
    total, seen = 0.0, 0
    for pos in shuffled_batches(len(indices), batch_size, rng):
        rows = indices[pos]
        xb, yb = gather(x, rows, device), y[torch.from_numpy(rows)].to(device)
        loss = batch_loss(pos, xb, yb)
        opt.zero_grad(set_to_none=True)
        (scale * loss if scale != 1.0 else loss).backward()
        opt.step()
        total += float(loss.detach()) * len(rows)
        seen += len(rows)
    if kept is not None:
        _store_momentum(model, opt, kept)
    if not np.isfinite(total):
        raise FloatingPointError(f"{what} loss became NaN/Inf ({hint})")
    return total / max(seen, 1)


def local_epoch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: np.ndarray,
    *,
    lr: float,
    batch_size: int,
    rng: np.random.Generator,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    mixup_alpha: float = 0.0,
    device: str = "cpu",
) -> float:
    """One pass of cross-entropy SGD over ``x[indices]``; returns the mean training loss.

    With ``mixup_alpha > 0`` each batch is mixed (MIST+Mixup). Modifies ``model`` in place.
    """
    def loss(pos: np.ndarray, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return mixup_loss(model, xb, yb, mixup_alpha, rng) if mixup_alpha > 0 else F.cross_entropy(model(xb), yb)

    return sgd_pass(model, x, y, indices, loss, lr=lr, batch_size=batch_size, rng=rng, momentum=momentum,
                    weight_decay=weight_decay, device=device)
