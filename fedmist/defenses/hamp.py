"""HAMP (Chen & Pattabiraman, NDSS 2024; MIST paper Sec. 2.2): make the model less confident on
its training data, so members and non-members look alike.

Training: cross-entropy against high-entropy soft labels (true class γ, every other class
(1 − γ)/(K − 1)) minus ``entropy_weight`` × the entropy of the prediction (a reward for high-entropy
outputs). γ is given directly (``gamma``) or, as in HAMP's artefact and the MIST authors' code, as
an ``entropy_percentile``: the soft label must carry at least that share of the maximum entropy
ln K (``gamma_for_percentile``). ``reduction = "mean"`` averages the soft-label term over the n × K
entries of the batch, as ``F.kl_div``'s default does in both of those codes (the term is then 1/K of
the per-example cross-entropy, and ``entropy_weight`` is their ``alpha`` / ``hamp_weight``).

Query time (``output_modification``): each released vector is the prediction on a random input,
re-ordered so that its ranking of the classes is the real prediction's; only the order of the
classes leaks, not the confidence values. The random inputs are the artefact's (every feature 0 or
1 with probability ½, ``random_inputs = "bits"``) or uniform in the data's per-feature range
(``"range"``).

``best_validation``: keep the epoch whose accuracy on the run's reference rows (a held-out share of
the training budget, ``reference_size``; never audit or test rows) is highest, as the artefact
releases its ``protected_model_best`` checkpoint. The run-wide ``RunConfig.best_validation`` does
the same for every defense (``fedmist.training.best_epoch``); this parameter says it in a HAMP
recipe and in runs written before that field existed.

The MIST paper evaluated HAMP's training-time defense only (the query-time part "can be integrated
with any training time defenses and ... is approximately equivalent to providing the predicted
label only"), so ``output_modification`` is off by default.
"""

from __future__ import annotations

import math
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
DEFAULT_GAMMA = 0.5  # γ when neither gamma nor entropy_percentile is given (fedmist's earlier default)
PERCENTILE_STEP = 0.01  # the artefact lowers the true-class probability from 1 in steps of 0.01
REDUCTIONS = ("batchmean", "mean")
RANDOM_INPUTS = ("bits", "range")


@dataclass(frozen=True)
class HampParams:
    """Give at most one of ``gamma`` / ``entropy_percentile`` (0 = not given; both is a ConfigError,
    neither means γ = ``DEFAULT_GAMMA``).

    ``gamma``: the soft label's true-class probability (must exceed 1/K so the argmax stays the
    true class). ``entropy_percentile``: the soft label's entropy as a share of ln K, mapped to γ by
    ``gamma_for_percentile`` (HAMP's own parameter). ``entropy_weight``: weight of the entropy
    reward. ``reduction``: ``"batchmean"`` (per-example cross-entropy, averaged over the batch) or
    ``"mean"`` (averaged over the batch's n × K entries, PyTorch's ``F.kl_div`` default, which the
    artefact and the MIST code use). ``output_modification``: HAMP's query-time defense (off: the
    MIST paper's evaluation). ``random_inputs``: its random queries, ``"bits"`` (the artefact's) or
    ``"range"`` (uniform in each feature's range). ``best_validation``: release the epoch with the
    best accuracy on the reference rows (needs ``reference_size`` > 0)."""

    gamma: float = 0.0
    entropy_percentile: float = 0.0
    entropy_weight: float = 0.1
    reduction: str = "batchmean"
    output_modification: bool = False
    random_inputs: str = "bits"
    best_validation: bool = False

    def check(self) -> None:
        if self.gamma and self.entropy_percentile:
            raise ConfigError("hamp: give gamma or entropy_percentile, not both "
                              f"(got gamma = {self.gamma}, entropy_percentile = {self.entropy_percentile})")
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"hamp: gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.entropy_percentile < 1:
            raise ConfigError(f"hamp: entropy_percentile must be in (0, 1), got {self.entropy_percentile}")
        if self.entropy_weight < 0:
            raise ConfigError(f"hamp: entropy_weight must be >= 0, got {self.entropy_weight}")
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"hamp: reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")
        if self.random_inputs not in RANDOM_INPUTS:
            raise ConfigError(f"hamp: random_inputs must be one of {', '.join(RANDOM_INPUTS)}, "
                              f"got {self.random_inputs!r}")

    def gamma_for(self, num_classes: int) -> float:
        """The soft label's true-class probability for ``num_classes`` classes."""
        if self.entropy_percentile:
            return gamma_for_percentile(self.entropy_percentile, num_classes)
        return self.gamma or DEFAULT_GAMMA


def label_entropy(gamma: float, num_classes: int) -> float:
    """Entropy (nats) of the soft label with γ on one class and the rest shared evenly.

    >>> round(label_entropy(0.68, 30), 4), round(label_entropy(1 / 30, 30), 4) == round(math.log(30), 4)
    (1.7044, True)
    """
    other = (1 - gamma) / (num_classes - 1)
    terms = [gamma] + [other] * (num_classes - 1)
    return -sum(p * math.log(p) for p in terms if p > 0)


def gamma_for_percentile(percentile: float, num_classes: int) -> float:
    """HAMP's mapping from a target entropy to γ: starting from the one-hot label (γ = 1), take
    0.01 from the true class (shared evenly by the others) until the label's entropy reaches
    ``percentile`` × ln K; the first γ that does is the answer.

    >>> gamma_for_percentile(0.5, 30), gamma_for_percentile(0.1, 30)
    (0.68, 0.95)
    """
    if not 0 < percentile < 1:
        raise ConfigError(f"hamp: entropy_percentile must be in (0, 1), got {percentile}")
    target = percentile * math.log(num_classes)
    steps = 1
    while True:
        gamma = round(1 - steps * PERCENTILE_STEP, 10)
        if gamma <= 1 / num_classes:
            raise ConfigError(f"hamp: entropy_percentile {percentile} needs γ <= 1/K at K = {num_classes}; "
                              "choose a smaller one")
        if label_entropy(gamma, num_classes) >= target:
            return gamma
        steps += 1


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


def hamp_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float, entropy_weight: float,
              reduction: str = "batchmean") -> torch.Tensor:
    """Soft-label cross-entropy (divided by K when ``reduction == "mean"``) minus
    ``entropy_weight`` × prediction entropy. The cross-entropy differs from the KL divergence to
    the soft labels by a constant, so the gradients are those of the authors' ``F.kl_div``.

    >>> logits = torch.zeros(1, 4)  # uniform prediction: cross-entropy ln 4, entropy ln 4
    >>> round(float(hamp_loss(logits, torch.tensor([0]), 0.7, 0.0, "mean")), 4) == round(math.log(4) / 4, 4)
    True
    """
    targets = soft_labels(y, logits.shape[1], gamma)
    ce = -(targets * torch.log_softmax(logits, dim=1)).sum(1).mean()
    if reduction == "mean":
        ce = ce / logits.shape[1]
    return ce - entropy_weight * entropy(logits)


@register_step("hamp")
def hamp_step(ctx: StepContext) -> float:
    """One epoch of SGD on the HAMP loss over the client's rows."""
    p: HampParams = ctx.params
    gamma = p.gamma_for(ctx.num_classes)
    if not gamma > 1 / ctx.num_classes:
        raise ConfigError(f"hamp: gamma must exceed 1/K = {1 / ctx.num_classes:.4f} so the true class "
                          f"stays the most likely, got {gamma}")
    model = ctx.model
    loss = lambda pos, xb, yb: hamp_loss(model(xb), yb, gamma, p.entropy_weight, p.reduction)  # noqa: E731
    return sgd_pass(model, ctx.x, ctx.y, ctx.rows, loss, lr=ctx.lr, batch_size=ctx.batch_size, rng=ctx.rng, momentum=ctx.momentum,
                    weight_decay=ctx.weight_decay, device=ctx.device, what="HAMP")


# --- query time: output modification --------------------------------------------------------------
def reorder_like(real: torch.Tensor, random: torch.Tensor) -> torch.Tensor:
    """Row-wise: ``random``'s values sorted, placed so they rank the classes as ``real`` does
    (the largest random value goes to ``real``'s argmax, and so on). Both (n, K)."""
    order = torch.argsort(real, dim=1, descending=True, stable=True)
    values = torch.sort(random, dim=1, descending=True).values
    return torch.empty_like(random).scatter_(1, order, values)


class HampOutput(nn.Module):
    """The deployed model with HAMP's output modification: returns log-probabilities whose softmax
    is a random input's prediction re-ordered by the real prediction's ranking (one fresh random
    input per query, as the artefact's ``alter_output``)."""

    def __init__(self, model: nn.Module, low: torch.Tensor, high: torch.Tensor, seed: int,
                 random_inputs: str = "bits"):
        super().__init__()
        if random_inputs not in RANDOM_INPUTS:
            raise ValueError(f"random_inputs must be one of {RANDOM_INPUTS}, got {random_inputs!r}")
        self.model = model
        self.register_buffer("low", low.float())
        self.register_buffer("high", high.float())
        self.mode = random_inputs
        self.generator = torch.Generator().manual_seed(seed)

    def random_inputs(self, n: int) -> torch.Tensor:
        """``n`` random inputs (seeded: a run's queries repeat): every feature 0 or 1 with
        probability ½ (``"bits"``, the artefact's ``random_flip``), or uniform in the data's
        per-feature range (``"range"``)."""
        u = torch.rand((n, *self.low.shape), generator=self.generator).to(self.low.device)
        if self.mode == "bits":
            return (u < 0.5).float()
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
    return HampOutput(model, state[LOW], state[HIGH], cfg.seed + QUERY_SEED, params.random_inputs)


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
    # The soft label's entropy (HAMP's own parameter, mapped to gamma): higher = softer = stronger.
    tune_more=(Knob("params.entropy_percentile", 0.05, 0.9, log=False),),
))
