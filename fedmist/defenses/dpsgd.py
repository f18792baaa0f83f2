"""DP-SGD (Abadi et al., CCS 2016) with Opacus: per-example clipping, Gaussian noise, RDP accounting.

A 1-client federation like ``sgd`` whose clients run the ``dpsgd`` step: every epoch is
``round(n / batch_size)`` steps over Poisson-sampled batches (each training row joins a batch
independently with rate ``q = batch_size / n``), which is the sampling the RDP accountant assumes.
Opacus computes the per-example gradients, clips them and adds the noise; fedmist only draws the
batches. After training the run reports the (ε, δ) the whole run spent (``summary["defense"]``).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmist.config import RunConfig
from fedmist.data.registry import load_dataset
from fedmist.defenses.registry import DefenseSpec, Knob, register_defense
from fedmist.errors import ConfigError, require_finite
from fedmist.models import MODELS, build_model
from fedmist.training.batches import gather
from fedmist.training.local import make_optimizer
from fedmist.training.privacy import epsilon_spent  # noqa: F401  (re-exported)
from fedmist.training.steps import StepContext, register_step
from fedmist.training.workspace import model_name_for

# Layer types do not depend on the data's size, and validation must not load the data: the
# network is checked as built for this input (every registered model accepts it; the MLPs flatten).
PROBE_SHAPE = (3, 32, 32)
CLIPPING_MODES = ("ghost", "per_sample")


@dataclass(frozen=True)
class DPSGDParams:
    """DP-SGD's knobs.

    ``max_grad_norm`` C = 1.0 and δ = 1e-5 (< 1/n for every dataset here) are the usual choices
    (Opacus's examples; Abadi et al. clip at a few units). ``noise_multiplier`` σ: the MIST paper
    tunes DP-SGD to about the undefended test accuracy, where ε is huge. 0.05 is such a small-noise
    setting (clipping dominates the noise: per-coordinate noise std σC/B = 5e-4 at B = 100) but
    NOT yet tuned on a full 100-epoch run; tune it before quoting results. ``target_epsilon`` > 0 derives σ from the budget instead
    (Opacus's ``get_noise_multiplier`` for the run's epochs and sample rate).
    """

    noise_multiplier: float = 0.05
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    target_epsilon: float = 0.0
    # "ghost": Opacus's ghost clipping (per-example gradient *norms* from activations and output
    # gradients, then a second backward of the reweighted loss; the same clipped sum without
    # materialising B per-example gradients: ~10x faster on Location's MLP here). "per_sample":
    # Opacus's classic GradSampleModule (B copies of every weight gradient).
    clipping: str = "ghost"

    def check(self) -> None:
        require_finite("dpsgd: noise_multiplier", self.noise_multiplier, positive=False, must="a finite number >= 0")
        require_finite("dpsgd: max_grad_norm", self.max_grad_norm, positive=True, must="positive")
        if not 0 < self.delta < 1:
            raise ConfigError(f"dpsgd: delta must be in (0, 1), got {self.delta}")
        if self.clipping not in CLIPPING_MODES:
            raise ConfigError(f"dpsgd: clipping must be one of {', '.join(CLIPPING_MODES)}, got {self.clipping!r}")
        require_finite("dpsgd: target_epsilon", self.target_epsilon, positive=False,
                       must=">= 0 (0 = use noise_multiplier)")


# --- sampling and accounting ------------------------------------------------------------------
def poisson_schedule(n: int, batch_size: int) -> tuple[float, int]:
    """(sample rate q, steps per epoch) for ``n`` rows: q = B / n (at most 1), about n / B steps.

    >>> poisson_schedule(4000, 100)
    (0.025, 40)
    >>> poisson_schedule(50, 100)
    (1.0, 1)
    """
    q = min(1.0, batch_size / n)
    return q, max(1, round(n / batch_size))


@functools.lru_cache(maxsize=64)
def _calibrated_sigma(target_epsilon: float, delta: float, q: float, steps: int) -> float:
    from opacus.accountants.utils import get_noise_multiplier
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=q,
                                      steps=steps, accountant="rdp"))


def noise_multiplier_for(p: DPSGDParams, q: float, total_steps: int) -> float:
    """σ of the run: the given one, or the smallest that keeps ε ≤ ``target_epsilon``."""
    if p.target_epsilon > 0:
        return _calibrated_sigma(p.target_epsilon, p.delta, q, total_steps)
    return p.noise_multiplier


# --- the training step ------------------------------------------------------------------------
def _noise_generator(rng: np.random.Generator, device: str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))


@register_step("dpsgd")
def dpsgd_step(ctx: StepContext) -> float:
    """One epoch of DP-SGD on ``ctx.rows``; trains ``ctx.model`` in place and leaves it unwrapped."""
    p: DPSGDParams = ctx.params
    q, steps = poisson_schedule(len(ctx.rows), ctx.batch_size)
    ctx.model.train()
    optimizer_args = dict(noise_multiplier=noise_multiplier_for(p, q, steps * ctx.epochs),
                          max_grad_norm=p.max_grad_norm, expected_batch_size=max(1, round(q * len(ctx.rows))),
                          generator=_noise_generator(ctx.rng, ctx.device))
    base = make_optimizer(ctx.model, ctx.lr, ctx.momentum, ctx.weight_decay)
    with warnings.catch_warnings():
        # Opacus's hook on the first layer sees an input that needs no gradient: expected.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        if p.clipping == "ghost":
            loss = _ghost_epoch(ctx, base, optimizer_args, p.max_grad_norm, q, steps)
        else:
            loss = _per_sample_epoch(ctx, base, optimizer_args, q, steps)
    if not np.isfinite(loss):
        raise FloatingPointError("DP-SGD training loss became NaN/Inf (lr too high?)")
    return loss


def _poisson_batches(ctx: StepContext, q: float, steps: int):
    """``steps`` batches, each of the rows a Bernoulli(q) draw picks (the sampling RDP assumes)."""
    n = len(ctx.rows)
    for _ in range(steps):
        rows = ctx.rows[ctx.rng.random(n) < q]
        yield rows, gather(ctx.x, rows, ctx.device), ctx.y[torch.from_numpy(rows)].to(ctx.device)


def _per_sample_epoch(ctx: StepContext, base: torch.optim.Optimizer, optimizer_args: dict, q: float,
                      steps: int) -> float:
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    gsm = GradSampleModule(ctx.model)  # hooks on ctx.model's own layers, so the plain module trains
    try:
        opt = DPOptimizer(base, **optimizer_args)
        total, seen = 0.0, 0
        for rows, xb, yb in _poisson_batches(ctx, q, steps):
            opt.zero_grad(set_to_none=True)
            # Mean over the batch (Opacus rescales it to per-example gradients); an empty batch is a
            # noise-only step with loss 0 rather than NaN.
            loss = F.cross_entropy(gsm(xb), yb, reduction="sum") / max(len(rows), 1)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            seen += len(rows)
    finally:
        gsm.to_standard_module()  # removes the hooks and the grad_sample attributes again
    return total / max(seen, 1)


def _ghost_epoch(ctx: StepContext, base: torch.optim.Optimizer, optimizer_args: dict, max_grad_norm: float,
                 q: float, steps: int) -> float:
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    gsm = GradSampleModuleFastGradientClipping(ctx.model, max_grad_norm=max_grad_norm, use_ghost_clipping=True,
                                               loss_reduction="mean")
    try:
        opt = DPOptimizerFastGradientClipping(base, loss_reduction="mean", **optimizer_args)
        criterion = DPLossFastGradientClipping(gsm, opt, nn.CrossEntropyLoss(reduction="mean"), loss_reduction="mean")
        total, seen = 0.0, 0
        for rows, xb, yb in _poisson_batches(ctx, q, steps):
            opt.zero_grad(set_to_none=True)
            if len(rows) == 0:  # a noise-only step: the clipped sum of no examples is zero
                for param in opt.params:
                    param.grad = torch.zeros_like(param)
            else:
                loss = criterion(gsm(xb), yb)
                loss.backward()  # two backward passes: per-example norms, then the clipped sum
                total += float(loss.detach()) * len(rows)
                seen += len(rows)
            opt.step()
    finally:
        gsm.to_standard_module()  # removes the hooks and the per-example norm attributes
    return total / max(seen, 1)


# --- config validation and the report ---------------------------------------------------------
def _network(cfg: RunConfig) -> nn.Module | None:

    name = model_name_for(cfg)
    if name not in MODELS:
        return None  # reported as an unknown model where the model is built
    try:
        return build_model(name, PROBE_SHAPE, 10)
    except ConfigError:  # a network that needs its data's own shape
        ds = load_dataset(cfg.dataset, cfg.data_dir or None, seed=cfg.dataset_seed)
        return build_model(name, ds.feature_shape, ds.num_classes)


def check_private_model(model: nn.Module, name: str) -> None:
    """ConfigError naming the layers Opacus cannot give per-example gradients for (BatchNorm ...)."""
    from opacus.validators import ModuleValidator

    bad = [f"{path} ({type(layer).__name__})" for path, layer in model.named_modules()
           if not list(layer.children()) and ModuleValidator.validate(layer, strict=False)]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ConfigError(f"defense 'dpsgd' cannot train model {name!r}: Opacus cannot compute per-example "
                          f"gradients through {shown} (BatchNorm mixes the examples of a batch); "
                          "use a model without BatchNorm, e.g. alexnet or mlp")


def _check(cfg: RunConfig) -> None:

    model = _network(cfg)
    if model is not None:
        check_private_model(model, model_name_for(cfg))


def privacy_report(run) -> dict:
    """The (ε, δ) of the whole run: ``epochs`` × steps per epoch at sample rate q = B / n."""

    cfg = run.cfg
    p: DPSGDParams = DPSGD.parse_params(cfg.params)
    q, per_epoch = poisson_schedule(len(run.split.members), cfg.batch_size)
    steps = per_epoch * cfg.epochs
    sigma = noise_multiplier_for(p, q, steps)
    return {"epsilon": epsilon_spent(sigma, q, steps, p.delta), "delta": p.delta, "noise_multiplier": sigma,
            "max_grad_norm": p.max_grad_norm, "sample_rate": q, "steps": steps, "accountant": "rdp"}


DPSGD = register_defense(DefenseSpec(
    name="dpsgd",
    description="DP-SGD (Opacus): per-example clipping + Gaussian noise, Poisson batches, RDP accounting",
    fixed_clients=1,
    params=DPSGDParams,
    local_step="dpsgd",
    check_extra=_check,
    after_training=privacy_report,
    tune_knob=Knob("params.noise_multiplier", 0.05, 4.0),
))
