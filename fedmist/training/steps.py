"""Named client training steps: what one client does with one ``LocalJob``.

Plain SGD (with optional mixup) is ``sgd``; a defense that trains differently registers its own
step in its module (``@register_step("dpsgd")``) and names it in its ``DefenseSpec.local_step``.
A step gets everything in one ``StepContext`` and returns the mean training loss; it trains
``ctx.model`` in place and may update ``ctx.aux`` (the defense's own tensors, kept in the state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fedmist.training.local import local_epoch, sgd_pass


@dataclass
class StepContext:
    model: nn.Module  # loaded with the job's model weights, trained in place
    x: torch.Tensor  # the whole dataset (rows index into it)
    y: torch.Tensor
    rows: np.ndarray  # what this client trains on in this job
    lr: float
    batch_size: int
    momentum: float
    weight_decay: float
    mixup_alpha: float
    rng: np.random.Generator  # seeded per (seed, epoch, client, phase)
    device: str
    epoch: int
    epochs: int  # of the whole run (schedules, DP accounting)
    params: Any  # the defense's typed knobs
    num_classes: int
    reference: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # held-out reference rows
    soft_targets: np.ndarray | None = None  # (len(rows), K) probability targets (distillation)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)  # the defense's own state, ``aux/`` keys


Step = Callable[[StepContext], float]
STEPS: dict[str, Step] = {}


def register_step(name: str) -> Callable[[Step], Step]:
    def add(fn: Step) -> Step:
        if name in STEPS:
            raise ValueError(f"training step {name!r} is already registered")
        STEPS[name] = fn
        return fn
    return add


@register_step("sgd")
def sgd_step(ctx: StepContext) -> float:
    """Cross-entropy minibatch SGD (mixup when ``mixup_alpha > 0``): MIST's phase 1, the baseline."""
    return local_epoch(ctx.model, ctx.x, ctx.y, ctx.rows, lr=ctx.lr, batch_size=ctx.batch_size, rng=ctx.rng,
                       momentum=ctx.momentum, weight_decay=ctx.weight_decay, mixup_alpha=ctx.mixup_alpha,
                       device=ctx.device)


@register_step("distill")
def distill_step(ctx: StepContext) -> float:
    """Train on soft targets (KL to the given probabilities): SELENA's and DMP's student."""
    if ctx.soft_targets is None or ctx.soft_targets.shape[0] != len(ctx.rows):
        raise ValueError("the distill step needs one soft-target row per training row")
    targets = torch.from_numpy(np.asarray(ctx.soft_targets, dtype=np.float32)).to(ctx.device)
    model = ctx.model

    def loss(pos: np.ndarray, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(model(xb), dim=1)
        return torch.nn.functional.kl_div(logp, targets[torch.from_numpy(pos).to(ctx.device)], reduction="batchmean")

    return sgd_pass(model, ctx.x, ctx.y, ctx.rows, loss, lr=ctx.lr, batch_size=ctx.batch_size, rng=ctx.rng,
                    momentum=ctx.momentum, weight_decay=ctx.weight_decay, device=ctx.device, what="distillation")
