"""Shadow models for audits, trained with the target's own recipe through the same engine.

A MIST target gets MIST shadows, an SGD target SGD shadows: only the training rows and the seed
change. All missing shadows train in one engine session (one Flower simulation), so its start-up
is paid once per audit, not once per shadow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from fedmist.config import RunConfig
from fedmist.engine.jobs import State
from fedmist.errors import ConfigError
from fedmist.runner import Run, open_run, prepare_config, split_for

ENGINES = ("flower", "inprocess", "stacked")


def shadow_seed(target_seed: int, audit_seed: int, i: int) -> int:
    """Distinct from the target's seed and from every other shadow's, for any audit seed."""
    return 1_000_000 + 10_000 * audit_seed + 100 * target_seed + i


class ShadowTrainer:
    """``train_fn`` for ``fedmist.audit``: ``(i, member_rows) -> state_dict``, plus ``train_all``."""

    def __init__(self, config: RunConfig, audit_seed: int, engine: str = "flower") -> None:
        if engine not in ENGINES:
            raise ConfigError(f"shadow engine must be one of {ENGINES}, got {engine!r}")
        # The data seed stays the target's (synthetic data must be the same rows); only the final
        # epoch is evaluated (shadows are scored by the audit, not by their accuracy curve).
        self.base = dataclasses.replace(config, data_seed=config.dataset_seed, eval_every=config.epochs)
        self.audit_seed = audit_seed
        self.engine = engine

    def config_for(self, i: int) -> RunConfig:
        return prepare_config(dataclasses.replace(self.base, seed=shadow_seed(self.base.seed, self.audit_seed, i)))

    def __call__(self, i: int, rows: np.ndarray) -> State:
        out: dict[int, State] = {}
        self.train_all([(i, rows)], lambda j, state: out.__setitem__(j, state))
        return out[i]

    def train_all(self, jobs: list[tuple[int, np.ndarray]], done: Callable[[int, State], None]) -> None:
        runs: list[Run] = []
        # A defense's reference rows are the target's, outside the audit pool the shadows draw from.
        reference = split_for(prepare_config(dataclasses.replace(self.base))).reference
        for i, rows in jobs:
            run = open_run(self.config_for(i), None, members=rows, reference=reference)
            run.on_finish = lambda r, i=i: done(i, r.state)
            runs.append(run)
        if self.engine == "stacked":
            self._train_stacked(runs)
        else:
            from fedmist.simulation import train_runs
            train_runs(runs, self.base.clients, self.engine)


    def _train_stacked(self, runs: list[Run]) -> None:
        """All shadows at once with batched matmuls (same weights as one by one)."""
        from fedmist.data.split import partition
        from fedmist.defenses import DEFENSES
        from fedmist.engine.loop import lr_at
        from fedmist.engine.workspace import get_workspace
        from fedmist.training.seeding import PHASE_LOCAL, step_rng
        from fedmist.training.stacked import train_stacked

        cfg = self.base
        spec = DEFENSES[cfg.defense]
        if (spec.xdiff or cfg.clients != 1 or cfg.mixup_alpha > 0 or spec.local_step != "sgd"
                or spec.train_loop is not None or spec.init_aux is not None):
            raise ConfigError(f"the stacked shadow engine trains 1-client recipes without xdiff or mixup "
                              f"(e.g. sgd); use --shadow-engine flower or inprocess for {cfg.defense}")
        ws = get_workspace(cfg)
        rows = [partition(r.split.members, 1, r.cfg.seed, 1)[0] for r in runs]
        states = train_stacked(ws.model, [r.state for r in runs], ws.x, ws.y, rows, cfg.epochs,
                               rng_for=lambda i, e: step_rng(runs[i].cfg.seed, e, 0, PHASE_LOCAL),
                               lr_for=lambda e: lr_at(cfg, e), batch_size=cfg.batch_size,
                               momentum=cfg.momentum, weight_decay=cfg.weight_decay, device=ws.device)
        for run, state in zip(runs, states):
            run.state = state
            run.finish()


def shadow_trainer_factory(engine: str = "flower") -> Callable:
    """``(loaded run, audit seed) -> ShadowTrainer``, the factory ``fedmist.audit`` expects."""
    def factory(run, audit_seed: int) -> ShadowTrainer:
        return ShadowTrainer(run.config, audit_seed, engine)
    return factory
