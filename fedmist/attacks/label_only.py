"""Label-only distance attack (Choquette-Choo et al. 2021): members lie far from the boundary.

Only predicted labels are used. Choquette-Choo et al. measure the distance from x to the decision
boundary with an adversarial search; here it is estimated with random perturbations of growing
size r (bit flips for binary inputs, Gaussian noise of standard deviation r for continuous
ones): f(r) = fraction of ``copies`` perturbed queries whose correctness differs from x's, and
the distance is the radius where f first reaches ``q`` (log-interpolated between grid radii,
extrapolated beyond the largest). For a linear boundary at margin m, f(r) = Φ(−m/r), so the
distance is m / Φ⁻¹(1 − q), proportional to the true one. Choquette-Choo et al. give
misclassified points distance 0; here they get minus their distance to becoming correct, which
keeps them below every correctly classified point and orders them among themselves.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedmist.attacks.queries import (
    chunk_rows,
    flip_bits,
    input_domain,
    model_device,
    torch_generator,
)
from fedmist.attacks.registry import AttackSpec, attack_seed, register_attack

QUANTILE = 0.25


def default_radii(d: int, binary: bool, width: float) -> np.ndarray:
    """Bit flips 1, 2, 4, ... up to d/2 (binary), or 16 noise scales from 1e-3 to 2 x range."""
    if binary:
        top = max(1, d // 2)
        return np.unique(np.minimum(2 ** np.arange(int(np.log2(top)) + 1), top)).astype(np.float64)
    return width * np.geomspace(1e-3, 2.0, 16)


def crossing_radius(changed: np.ndarray, radii: np.ndarray, q: float, floor: float) -> np.ndarray:
    """(n, R) fractions changed at increasing ``radii`` (R,) -> (n,) radius where the fraction first
    reaches ``q``: log-interpolated between grid radii, linear from 0 below the first, and
    r_max·q/max(f_last, floor) beyond the last."""
    hit = changed >= q
    k = np.argmax(hit, axis=1)
    rows = np.arange(len(changed))
    f_k = changed[rows, k]
    km1 = np.maximum(k - 1, 0)
    f_prev, r_prev, r_k = changed[rows, km1], radii[km1], radii[k]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(f_k > f_prev, (q - f_prev) / (f_k - f_prev), 1.0)
        inside = np.exp(np.log(r_prev) + t * (np.log(r_k) - np.log(r_prev)))
        first = radii[0] * q / np.maximum(f_k, floor)
    beyond = radii[-1] * q / np.maximum(changed[:, -1], floor)
    return np.where(~hit.any(axis=1), beyond, np.where(k == 0, first, inside))


@torch.no_grad()
def label_only_scores(model: nn.Module, x: torch.Tensor, labels: np.ndarray, rng: np.random.Generator,
                      copies: int = 32, radii: np.ndarray | None = None, q: float = QUANTILE) -> np.ndarray:
    """(n, *features) inputs, (n,) labels -> (n,) signed distance estimates, higher = member."""
    model.eval()
    device = model_device(model)
    domain = input_domain(x)
    gen = torch_generator(rng, device)
    d = int(np.prod(x.shape[1:]))
    radii = default_radii(d, domain.binary, domain.width) if radii is None else np.asarray(radii, dtype=np.float64)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    step = chunk_rows(copies, d)
    out = []
    for i in range(0, len(x), step):
        xb = torch.as_tensor(x[i:i + step]).to(device, torch.float32)
        yb = y_all[i:i + step].to(device)
        correct = (model(xb).argmax(-1) == yb).cpu().numpy()
        right = []
        for r in radii:
            if domain.binary:
                noisy = flip_bits(xb, int(r), copies, gen)
            else:
                noisy = xb + float(r) * torch.randn((copies,) + tuple(xb.shape), generator=gen, device=device)
            pred = model(noisy.reshape((-1,) + tuple(xb.shape[1:]))).argmax(-1).reshape(copies, len(xb))
            right.append((pred == yb).double().mean(0).cpu().numpy())
        right_frac = np.stack(right, axis=1)                      # (chunk, R): P(perturbed is right)
        changed = np.where(correct[:, None], 1.0 - right_frac, right_frac)
        dist = crossing_radius(changed, radii, q, floor=0.5 / copies)
        out.append(np.where(correct, dist, -dist))
    return np.concatenate(out)


register_attack(AttackSpec(
    name="label_only",
    description="Choquette-Choo et al.: distance to the boundary from labels under growing random noise",
    needs=frozenset({"model"}),
    score=lambda ctx: label_only_scores(ctx.model, ctx.x, ctx.labels, attack_seed(ctx, "label_only")),
))
