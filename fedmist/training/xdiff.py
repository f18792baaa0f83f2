"""Phase 2 of MIST: the cross-difference (xdiff) loss and its targets (paper Eq. 3)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmist.training.batches import gather
from fedmist.training.local import sgd_pass

_EPS = 1e-6


def xdiff_loss(p_true: torch.Tensor, targets: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean distance between a sub-model's true-class probabilities and the peers' average.

    ``l1``: |p - t| (the paper's Eq. 3, divided by |batch|); ``l2``: (p - t)^2;
    ``kl``: KL(Bern(t) || Bern(p)), the KL divergence restricted to the true class, since the
    federation only exchanges true-class probabilities.

    >>> round(xdiff_loss(torch.tensor([0.9, 0.5]), torch.tensor([0.6, 0.5])).item(), 6)
    0.15
    """
    if kind == "l1":
        return (p_true - targets).abs().mean()
    if kind == "l2":
        return (p_true - targets).pow(2).mean()
    if kind == "kl":
        p = p_true.clamp(_EPS, 1 - _EPS)
        t = targets.clamp(_EPS, 1 - _EPS)
        return (t * (t / p).log() + (1 - t) * ((1 - t) / (1 - p)).log()).mean()
    raise ValueError(f"unknown xdiff loss {kind!r}")


def true_class_probs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: np.ndarray,
                     batch_size: int = 1024, device: str = "cpu") -> np.ndarray:
    """Softmax probability of the true class, F(x; θ)_y, for each row in ``indices`` (float32)."""
    model.eval()
    out = np.empty(len(indices), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            rows = indices[start:start + batch_size]
            probs = F.softmax(model(gather(x, rows, device)), dim=1)
            yb = y[torch.from_numpy(rows)].to(device)
            out[start:start + len(rows)] = probs.gather(1, yb[:, None]).squeeze(1).float().cpu().numpy()
    return out


def xdiff_targets(peer_probs: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """t(x) = mean over the *other* clients of their true-class probability on x.

    ``peer_probs``: (C, N), row c = client c's phase-1 true-class probabilities on the N training
    examples (entries on its own partition are ignored, so they may be NaN). ``owner``: (N,) index
    of the client that trains on each example.

    >>> p = np.array([[0.9, 0.2, 0.4], [0.5, 0.8, 0.6], [0.1, 0.6, 0.7]])
    >>> [round(float(v), 3) for v in xdiff_targets(p, np.array([0, 1, 2]))]
    [0.3, 0.4, 0.5]
    """
    C, N = peer_probs.shape
    if owner.shape != (N,):
        raise ValueError(f"owner has shape {owner.shape}, expected ({N},)")
    if C < 2:
        raise ValueError("xdiff targets need at least 2 clients")
    mask = np.ones((C, N), dtype=bool)
    mask[owner, np.arange(N)] = False
    vals = np.where(mask, peer_probs, 0.0).astype(np.float64)
    return (vals.sum(0) / (C - 1)).astype(np.float32)


def xdiff_epoch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: np.ndarray,
    targets: np.ndarray,
    *,
    lam: float,
    lr: float,
    batch_size: int,
    rng: np.random.Generator,
    kind: str = "l1",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    device: str = "cpu",
) -> float:
    """One pass of SGD on λ·xdiff over the client's partition; returns the mean xdiff (without λ).

    ``targets[i]`` is the target for ``indices[i]``. Plain cross-entropy is not added (Alg. 1).
    """
    if len(targets) != len(indices):
        raise ValueError(f"{len(targets)} targets for {len(indices)} examples")
    t_all = torch.from_numpy(np.asarray(targets, dtype=np.float32)).to(device)

    def loss(pos: np.ndarray, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        p = F.softmax(model(xb), dim=1).gather(1, yb[:, None]).squeeze(1)
        return xdiff_loss(p, t_all[torch.from_numpy(pos).to(device)], kind)

    return sgd_pass(model, x, y, indices, loss, lr=lr, batch_size=batch_size, rng=rng, momentum=momentum,
                    weight_decay=weight_decay, device=device, scale=lam, what="xdiff", hint="lambda or lr too high?")
