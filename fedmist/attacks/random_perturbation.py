"""Random perturbation (Jayaraman et al. 2021, MERLIN): members sit in loss minima.

Query the target on ``copies`` noisy versions of x and count how often the loss goes *up*
relative to x itself; a member's neighbourhood mostly has higher loss. Noise is Gaussian with
standard deviation ``noise_frac`` × the data's range for continuous inputs, and ``flip_frac`` × d
random bit flips for binary ones. The score is the fraction of copies with higher loss; ties
(common with few copies) are broken by the mean loss increase, with a bonus smaller than one
step of the fraction.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmist.attacks.queries import (
    chunk_rows,
    flip_bits,
    input_domain,
    model_device,
    torch_generator,
)
from fedmist.attacks.registry import AttackSpec, attack_seed, register_attack


@torch.no_grad()
def random_perturbation_scores(model: nn.Module, x: torch.Tensor, labels: np.ndarray, rng: np.random.Generator,
                               copies: int = 64, flip_frac: float = 0.01, noise_frac: float = 0.01) -> np.ndarray:
    """(n, *features) inputs, (n,) labels -> (n,) scores in [0, 1 + 1/(copies+1)), higher = member."""
    model.eval()
    device = model_device(model)
    domain = input_domain(x)
    gen = torch_generator(rng, device)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    d = int(np.prod(x.shape[1:]))
    n_flips = max(1, round(flip_frac * d))
    step = chunk_rows(copies, d)
    out = []
    for i in range(0, len(x), step):
        xb = torch.as_tensor(x[i:i + step]).to(device, torch.float32)
        yb = y_all[i:i + step].to(device)
        base = F.cross_entropy(model(xb).double(), yb, reduction="none")
        if domain.binary:
            noisy = flip_bits(xb, n_flips, copies, gen)
        else:
            noise = torch.randn((copies,) + tuple(xb.shape), generator=gen, device=device)
            noisy = xb + noise_frac * domain.width * noise
        logits = model(noisy.reshape((-1,) + tuple(xb.shape[1:]))).double()
        loss = F.cross_entropy(logits, yb.repeat(copies), reduction="none").reshape(copies, len(xb))
        higher = (loss > base).double().mean(0)
        bonus = (torch.atan((loss - base).mean(0)) / torch.pi + 0.5) / (copies + 1)
        out.append((higher + bonus).cpu())
    return torch.cat(out).numpy()


register_attack(AttackSpec(
    name="random_perturbation",
    description="Jayaraman et al. MERLIN: how often random input noise (bit flips) raises the loss",
    needs=frozenset({"model"}),
    score=lambda ctx: random_perturbation_scores(ctx.model, ctx.x, ctx.labels, attack_seed(ctx, "random_perturbation")),
))
