"""Privacy accounting shared by DP-SGD (per-example) and DP-FedAvg (per-client): one accountant."""

from __future__ import annotations

import math


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε of ``steps`` Poisson-subsampled Gaussian steps by Opacus's RDP accountant (inf without noise)."""
    from opacus.accountants import RDPAccountant

    if noise_multiplier <= 0:
        return math.inf
    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta))
