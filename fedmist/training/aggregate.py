"""Averaging sub-models (MIST's aggregation step, FedAvg with equal weights)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

State = dict[str, torch.Tensor]


def average_states(states: Sequence[State], weights: Sequence[float] | None = None) -> State:
    """Convex combination of state dicts (equal weights by default, as in the paper).

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are taken from the first state.

    >>> a = {"w": torch.tensor([1.0, 3.0])}; b = {"w": torch.tensor([3.0, 5.0])}
    >>> average_states([a, b])["w"].tolist()
    [2.0, 4.0]
    """
    if not states:
        raise ValueError("nothing to average")
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys:
            raise ValueError("state dicts have different keys")
    w = [1.0 / len(states)] * len(states) if weights is None else [float(v) for v in weights]
    if abs(sum(w) - 1.0) > 1e-6:
        raise ValueError(f"weights must sum to 1, got {sum(w)}")
    out: State = {}
    for k in keys:
        if states[0][k].is_floating_point():
            out[k] = sum(wi * s[k].to(torch.float64) for wi, s in zip(w, states)).to(states[0][k].dtype)
        else:
            out[k] = states[0][k].clone()
    return out
