"""Fully connected classifier for the tabular MI benchmarks (Nasr et al. 2018/2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NASR_HIDDEN = (1024, 512, 256, 128)


class MLP(nn.Module):
    """Tanh MLP, e.g. 446-1024-512-256-128-30 for Location; returns logits."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = NASR_HIDDEN) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))
