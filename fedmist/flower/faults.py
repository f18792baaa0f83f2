"""Test-only fault injection for the ClientApp: make chosen clients misbehave on purpose.

Set ``FEDMIST_FAULT=<kind>:<clients>[:<epochs>[:<seed>]]`` in the environment of the client processes
(a SuperNode's environment reaches its ClientApp processes; a simulation's reaches its actors):
``kind`` is ``nan`` (weights and probabilities become NaN), ``error`` (the handler raises),
``shape`` (a weight gets a wrong shape) or ``hang`` (sleep ``FEDMIST_FAULT_HANG_S``, default 3600 s);
``clients`` and ``epochs`` are comma-separated (empty ``epochs``: every epoch); ``seed`` limits the
fault to runs with that seed (so one set of SuperNodes can serve clean and faulty test runs).
Example: ``FEDMIST_FAULT=nan:1`` makes client 1 return NaN weights in every round. Unset: no effect.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

KINDS = ("nan", "error", "shape", "hang")


@dataclass(frozen=True)
class Fault:
    kind: str
    clients: frozenset[int]
    epochs: frozenset[int] | None
    seed: int | None = None

    def hits(self, client: int, epoch: int, seed: int) -> bool:
        return (client in self.clients and (self.epochs is None or epoch in self.epochs)
                and (self.seed is None or seed == self.seed))


def current() -> Fault | None:
    spec = os.environ.get("FEDMIST_FAULT", "").strip()
    if not spec:
        return None
    parts = spec.split(":")
    if parts[0] not in KINDS or len(parts) not in (2, 3, 4):
        raise ValueError(f"FEDMIST_FAULT={spec!r}: expected <{'|'.join(KINDS)}>:<clients>[:<epochs>[:<seed>]]")
    ints = lambda s: frozenset(int(v) for v in s.split(",") if v)  # noqa: E731
    epochs = ints(parts[2]) if len(parts) >= 3 and parts[2] else None
    seed = int(parts[3]) if len(parts) == 4 and parts[3] else None
    return Fault(parts[0], ints(parts[1]), epochs, seed)


def before(client: int, epoch: int, seed: int) -> None:
    """Faults that strike before the work: raise or hang."""
    fault = current()
    if fault is None or not fault.hits(client, epoch, seed):
        return
    if fault.kind == "error":
        raise RuntimeError(f"injected fault (FEDMIST_FAULT) in client {client}, epoch {epoch}")
    if fault.kind == "hang":
        time.sleep(float(os.environ.get("FEDMIST_FAULT_HANG_S", "3600")))


def corrupt(client: int, epoch: int, seed: int, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Faults that spoil the reply's weights: NaN or a wrong shape."""
    fault = current()
    if fault is None or not fault.hits(client, epoch, seed):
        return state
    state = dict(state)
    first = next(iter(state))
    if fault.kind == "nan":
        state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    elif fault.kind == "shape":
        state[first] = torch.zeros(1, dtype=state[first].dtype)
    return state
