"""Seeds derived from (run seed, epoch, client, phase), so any process reproduces any step."""

from __future__ import annotations

import numpy as np
import torch

PHASE_LOCAL, PHASE_XDIFF, PHASE_INIT = 1, 2, 0


def step_rng(seed: int, epoch: int, client: int, phase: int) -> np.random.Generator:
    """A numpy generator for one client's phase in one epoch; also seeds torch (dropout, init)."""
    ss = np.random.SeedSequence([seed, epoch, client, phase])
    torch.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] % (2**63 - 1)))
    return np.random.default_rng(ss)
