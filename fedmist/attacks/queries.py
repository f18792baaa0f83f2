"""Shared torch plumbing for attacks that query a model: batching, devices, input domains."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameter-free model)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """(n, *features) inputs -> (n, K) float64 logits, in eval mode, batched on the model's device."""
    model.eval()
    device = model_device(model)
    x = torch.as_tensor(x)
    chunks = [model(x[i:i + batch_size].to(device, torch.float32)).double().cpu()
              for i in range(0, len(x), batch_size)]
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0))


@dataclass(frozen=True)
class InputDomain:
    """Where perturbed inputs may live: binary {0, 1} features, or a box [lo, hi]."""

    binary: bool
    lo: float
    hi: float

    @property
    def width(self) -> float:
        return max(self.hi - self.lo, 1e-12)


def input_domain(x: torch.Tensor) -> InputDomain:
    """Binary when every value is 0 or 1 (Location/Texas/Purchase); else the observed range."""
    x = torch.as_tensor(x)
    if bool(((x == 0) | (x == 1)).all()):
        return InputDomain(True, 0.0, 1.0)
    return InputDomain(False, float(x.min()), float(x.max()))


def flip_bits(x: torch.Tensor, n_flips: int, copies: int, generator: torch.Generator) -> torch.Tensor:
    """``copies`` versions of each row of binary ``x`` (n, *f), each with ``n_flips`` distinct
    random features flipped. Returns (copies, n, *f)."""
    flat = x.reshape(len(x), -1)
    d = flat.shape[1]
    k = min(max(n_flips, 0), d)
    noise = torch.rand((copies, len(x), d), generator=generator, device=x.device)
    pos = noise.argsort(dim=-1)[..., :k]
    mask = torch.zeros_like(noise).scatter_(-1, pos, 1.0)
    out = flat.unsqueeze(0) + mask * (1.0 - 2.0 * flat.unsqueeze(0))
    return out.reshape((copies,) + tuple(x.shape))


def chunk_rows(copies: int, row_size: int, budget: int = 4_000_000) -> int:
    """How many examples to perturb at once so that copies x rows x features stays near ``budget``."""
    return max(1, budget // max(1, copies * row_size))


def torch_generator(rng: np.random.Generator, device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` seeded from a numpy generator (one source of randomness)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(2**62)))
    return gen
