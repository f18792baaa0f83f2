"""HAMP (Chen & Pattabiraman, NDSS 2024; MIST paper Sec. 2.2): make the model less confident on
its training data, so members and non-members look alike.

Training: cross-entropy against high-entropy soft labels (true class γ, every other class
(1 − γ)/(K − 1)) minus ``entropy_weight`` × the entropy of the prediction (a reward for high-entropy
outputs). Query time (``output_modification``): each released vector is the prediction on a random
input, re-ordered so that its ranking of the classes is the real prediction's; only the order of
the classes leaks, not the confidence values.

The MIST paper evaluated HAMP's training-time defense only (the query-time part "can be integrated
with any training time defenses and ... is approximately equivalent to providing the predicted
label only"), so ``output_modification`` is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedmist.config import RunConfig
from fedmist.defenses.registry import DefenseSpec, Knob, register_defense
from fedmist.errors import ConfigError
from fedmist.training.local import sgd_pass
from fedmist.training.steps import StepContext, register_step
from fedmist.training.workspace import get_workspace

LOW, HIGH = "aux/hamp/feature_low", "aux/hamp/feature_high"  # the data's feature range, for random queries
QUERY_SEED = 0x4A4D  # offset of the random-input generator's seed from the run's seed


@dataclass(frozen=True)
class HampParams:
    """``gamma``: the soft label's true-class probability (must exceed 1/K so the argmax stays the
    true class). ``entropy_weight``: weight of the entropy reward. HAMP tunes both per dataset
    (its paper is not in ../shared); 0.5 keeps ~70 % of the maximum label entropy at K = 30 and
    a weight of 0.1 moves the soft-label optimum only slightly towards uniform.
    ``output_modification``: HAMP's query-time defense (off: the MIST paper's evaluation)."""

    gamma: float = 0.5
    entropy_weight: float = 0.1
    output_modification: bool = False

    def check(self) -> None:
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"hamp: gamma must be in (0, 1], got {self.gamma}")
        if self.entropy_weight < 0:
            raise ConfigError(f"hamp: entropy_weight must be >= 0, got {self.entropy_weight}")


def soft_labels(y: torch.Tensor, num_classes: int, gamma: float) -> torch.Tensor:
    """(n,) labels -> (n, K) targets: γ on the true class, (1 − γ)/(K − 1) elsewhere.

    >>> soft_labels(torch.tensor([2, 0]), 3, 0.5).tolist()
    [[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]]
    """
    if num_classes < 2:
        raise ValueError("soft labels need at least 2 classes")
    out = torch.full((len(y), num_classes), (1 - gamma) / (num_classes - 1), device=y.device)
    return out.scatter_(1, y.view(-1, 1), gamma)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of softmax(logits), computed from log-probabilities (no log 0)."""
    logp = torch.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1).mean()


def hamp_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float, entropy_weight: float) -> torch.Tensor:
    """Soft-label cross-entropy minus ``entropy_weight`` × prediction entropy."""
    targets = soft_labels(y, logits.shape[1], gamma)
    ce = -(targets * torch.log_softmax(logits, dim=1)).sum(1).mean()
    return ce - entropy_weight * entropy(logits)


@register_step("hamp")
def hamp_step(ctx: StepContext) -> float:
    """One epoch of SGD on the HAMP loss over the client's rows."""
    p: HampParams = ctx.params
    if not p.gamma > 1 / ctx.num_classes:
        raise ConfigError(f"hamp: gamma must exceed 1/K = {1 / ctx.num_classes:.4f} so the true class "
                          f"stays the most likely, got {p.gamma}")
    model = ctx.model
    loss = lambda pos, xb, yb: hamp_loss(model(xb), yb, p.gamma, p.entropy_weight)  # noqa: E731
    return sgd_pass(model, ctx.x, ctx.y, ctx.rows, loss, lr=ctx.lr, batch_size=ctx.batch_size, rng=ctx.rng, momentum=ctx.momentum,
                    weight_decay=ctx.weight_decay, device=ctx.device, what="HAMP")


def reorder_like(real: torch.Tensor, random: torch.Tensor) -> torch.Tensor:
    """Row-wise: ``random``'s values sorted, placed so they rank the classes as ``real`` does
    (the largest random value goes to ``real``'s argmax, and so on). Both (n, K)."""
    order = torch.argsort(real, dim=1, descending=True, stable=True)
    values = torch.sort(random, dim=1, descending=True).values
    return torch.empty_like(random).scatter_(1, order, values)


class HampOutput(nn.Module):
    """The deployed model with HAMP's output modification: returns log-probabilities whose softmax
    is the random input's prediction re-ordered by the real prediction's ranking."""

    def __init__(self, model: nn.Module, low: torch.Tensor, high: torch.Tensor, seed: int):
        super().__init__()
        self.model = model
        self.register_buffer("low", low.float())
        self.register_buffer("high", high.float())
        self.generator = torch.Generator().manual_seed(seed)

    def random_inputs(self, n: int) -> torch.Tensor:
        """``n`` inputs uniform in the data's per-feature range (seeded: a run's queries repeat)."""
        u = torch.rand((n, *self.low.shape), generator=self.generator).to(self.low.device)
        return self.low + (self.high - self.low) * u

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        real = torch.log_softmax(self.model(x), dim=1)
        rand = torch.log_softmax(self.model(self.random_inputs(len(x))), dim=1)
        return reorder_like(real, rand)


def feature_range(cfg: RunConfig, params: HampParams, model: nn.Module) -> dict[str, torch.Tensor]:
    """Per-feature min and max of the dataset, kept in the state so the query-time model needs
    nothing but the run (stored whatever ``output_modification`` says, so it can be switched on
    when the run is loaded)."""

    x = get_workspace(cfg).x
    return {LOW: x.amin(0).float().cpu(), HIGH: x.amax(0).float().cpu()}


def modified_model(model: nn.Module, state: dict[str, torch.Tensor], cfg: RunConfig) -> nn.Module:
    """The query-time model: the network itself, or wrapped in HAMP's output modification."""
    params = HAMP.parse_params(cfg.params)
    if not params.output_modification:
        return model
    if LOW not in state or HIGH not in state:
        raise ValueError("HAMP output modification needs the feature range (aux/hamp/...) from the "
                         "run's defense.pt; this state has none")
    return HampOutput(model, state[LOW], state[HIGH], cfg.seed + QUERY_SEED)


def _check(cfg: RunConfig) -> None:
    if cfg.mixup_alpha > 0:
        raise ConfigError("hamp trains on soft labels without mixup; leave --mixup-alpha at 0")


HAMP = register_defense(DefenseSpec(
    name="hamp",
    description="HAMP (Chen et al.): high-entropy soft labels + entropy reward; optional rank-only outputs",
    fixed_clients=1,
    check_extra=_check,
    params=HampParams,
    local_step="hamp",
    init_aux=feature_range,
    query_model=modified_model,
    tune_knob=Knob("params.entropy_weight", 0.01, 2.0),
))
