"""CANARY (Wen et al. 2023; Algorithm 1 of Jadidi & Shafiee's overview), adapted to any input.

For every audited x, ``n_canaries`` queries x_mal = x + Δ are optimised from slightly perturbed
starts so that shadow models trained with x (IN) give a low loss and those trained without it
(OUT) a high one: Δ descends mean_IN CE − mean_OUT CE (the OUT term alone when offline) with
signed-gradient steps, projected onto ‖Δ‖∞ ≤ ε and the input domain. The target and every
shadow are then queried on the canaries, and LiRA on their φ scores, one canary per
augmentation slot, gives the membership score (as Wen et al. do).

Adaptation for tabular data: Location/Texas/Purchase have binary features, where gradient steps
do not apply. Canaries live in the continuous relaxation [0, 1]^d of the binary inputs and are
queried as such (the models take float inputs), with ε a fraction of the input range; continuous
data uses its observed range the same way. All IN and OUT shadows enter every step (the paper's
batch b equals the number of shadows), so no shuffling is needed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmist.attacks.context import AttackContext
from fedmist.attacks.lira import lira_scores
from fedmist.attacks.queries import (
    input_domain,
    model_device,
    predict_logits,
    torch_generator,
)
from fedmist.attacks.registry import AttackSpec, attack_seed, register_attack
from fedmist.attacks.signals import lira_phi


def make_canaries(shadow_models: list[nn.Module], keep: np.ndarray, x: torch.Tensor, labels: np.ndarray,
                  rng: np.random.Generator, n_canaries: int = 4, steps: int = 20, eps: float = 0.25,
                  step_frac: float = 0.25, init_frac: float = 0.1, online: bool = True,
                  batch_size: int = 256) -> torch.Tensor:
    """(S, n) keep, (n, *f) inputs -> (n_canaries, n, *f) canaries on the shadow models' device."""
    device = model_device(shadow_models[0])
    domain = input_domain(x)
    radius = eps * domain.width
    gen = torch_generator(rng, device)
    keep_t = torch.as_tensor(keep, dtype=torch.float32, device=device)
    w_in = keep_t / keep_t.sum(0).clamp(min=1) if online else torch.zeros_like(keep_t)
    w_out = (1 - keep_t) / (1 - keep_t).sum(0).clamp(min=1)
    y_all = torch.as_tensor(labels, dtype=torch.long, device=device)
    for m in shadow_models:
        m.eval()
    out = []
    for c in range(n_canaries):
        parts = []
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i:i + batch_size]).to(device, torch.float32)
            yb, sl = y_all[i:i + batch_size], slice(i, i + batch_size)
            delta = (torch.rand(xb.shape, generator=gen, device=device) * 2 - 1) * init_frac * radius
            delta = (xb + delta).clamp(domain.lo, domain.hi) - xb
            for _ in range(steps):
                delta.requires_grad_(True)
                objective = sum(
                    ((w_in[s, sl] - w_out[s, sl]) * F.cross_entropy(m(xb + delta), yb, reduction="none")).sum()
                    for s, m in enumerate(shadow_models))
                (g,) = torch.autograd.grad(objective, [delta])
                with torch.no_grad():
                    delta = (delta - step_frac * radius * g.sign()).clamp(-radius, radius)
                    delta = (xb + delta).clamp(domain.lo, domain.hi) - xb
            parts.append((xb + delta).detach())
        out.append(torch.cat(parts))
    return torch.stack(out)


def canary_scores(model: nn.Module, shadow_models: list[nn.Module], keep: np.ndarray, x: torch.Tensor,
                  labels: np.ndarray, rng: np.random.Generator, online: bool = True, **canary_options) -> np.ndarray:
    """(n,) LiRA scores of the target on the canaries of every example, higher = member."""
    canaries = make_canaries(shadow_models, keep, x, labels, rng, online=online, **canary_options)

    def phi(m: nn.Module) -> np.ndarray:  # (n, C)
        return np.stack([lira_phi(predict_logits(m, q), labels) for q in canaries], axis=1)
    target = phi(model)
    shadows = np.stack([phi(m) for m in shadow_models])
    return lira_scores(target, shadows, keep, online=online)


def _score(ctx: AttackContext) -> np.ndarray:
    shadows = [ctx.shadow_models(i) for i in range(ctx.n_shadows)]
    return canary_scores(ctx.model, shadows, ctx.keep, ctx.x, ctx.labels, attack_seed(ctx, "canary"))


register_attack(AttackSpec(
    name="canary",
    description="Wen et al. CANARY: inputs optimised on IN/OUT shadows, then LiRA on the target's answers",
    needs=frozenset({"outputs", "shadows", "model"}),
    score=_score,
    fields=("shadow_models",),
    min_shadows=4,  # per-example LiRA Gaussians on both sides
))
