"""Shadow models for audits, trained with the target's own recipe through the same engine.

A MIST target gets MIST shadows, an SGD target SGD shadows: only the training rows and the seed
change. All missing shadows train in one engine session (one Flower simulation), so its start-up
is paid once per audit, not once per shadow.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

from fedmist.config import RunConfig
from fedmist.data.split import partition
from fedmist.defenses import get_defense
from fedmist.errors import ConfigError
from fedmist.runs.inprocess import InProcessFederation
from fedmist.runs.rundir import Run, open_run, prepare_config, split_for, train_run
from fedmist.training.jobs import State, lr_at
from fedmist.training.seeding import PHASE_LOCAL, step_rng
from fedmist.training.stacked import train_stacked
from fedmist.training.workspace import get_workspace

# ``(opened runs, clients) -> None``: trains runs in Flower's simulation engine. The Flower layer sits
# above this one, so whoever asks for the ``flower`` engine hands it in (``fedmist.flower.simulation``).
SimulateRuns = Callable[[list[Run], int], None]

ENGINES = ("flower", "inprocess", "parallel", "stacked")


def shadow_seed(target_seed: int, audit_seed: int, i: int) -> int:
    """Distinct from the target's seed and from every other shadow's, for any audit seed."""
    return 1_000_000 + 10_000 * audit_seed + 100 * target_seed + i


class ShadowTrainer:
    """``train_fn`` for ``fedmist.audit``: ``(i, member_rows) -> state_dict``, plus ``train_all``."""

    def __init__(self, config: RunConfig, audit_seed: int, engine: str = "flower",
                 simulate: SimulateRuns | None = None) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"shadow engine must be one of {ENGINES}, got {engine!r}")
        if engine == "flower" and simulate is None:
            raise ValueError("the flower shadow engine needs the simulation (fedmist.flower.simulation.simulate_runs)")
        self.simulate = simulate
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
        # A defense's reference rows are the target's, outside the audit pool the shadows draw from.
        reference = split_for(prepare_config(dataclasses.replace(self.base))).reference
        if self.engine == "parallel" and min(len(jobs), shadow_workers()) > 1:
            self._train_parallel(jobs, reference, done)  # the workers open their own runs
            return
        runs: list[Run] = []
        for i, rows in jobs:
            run = open_run(self.config_for(i), None, members=rows, reference=reference)
            run.on_finish = lambda r, i=i: done(i, r.state)
            runs.append(run)
        if self.engine == "stacked":
            self._train_stacked(runs)
        elif self.engine == "flower":
            self.simulate(runs, self.base.clients)
        else:  # inprocess, or parallel with a single worker (the same functions)
            for run in runs:
                train_run(run, InProcessFederation())

    def _train_parallel(self, jobs: list[tuple[int, np.ndarray]], reference: np.ndarray,
                        done: Callable[[int, State], None]) -> None:
        """Whole shadows in worker processes, one torch thread each (the ``inprocess`` functions).

        Why: the Location-sized GEMMs (batch 100) reach ~115 GFLOP/s with 2 threads in one process
        but ~145 GFLOP/s as two 1-thread processes here, and a shadow is independent work, so
        splitting by shadow beats splitting each matmul. Weights equal ``inprocess``'s (tested).
        """
        workers = min(len(jobs), shadow_workers())
        threads = max(1, available_cores() // workers)
        # spawn, not fork: a forked child of a process whose OpenMP pool already ran can hang.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)) as pool:
            futures = {pool.submit(_train_one, self.config_for(i), rows, reference): i for i, rows in jobs}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())

    def _train_stacked(self, runs: list[Run]) -> None:
        """All shadows at once with batched matmuls (same weights as one by one)."""
        cfg = self.base
        spec = get_defense(cfg.defense)
        if (spec.xdiff or cfg.clients != 1 or cfg.mixup_alpha > 0 or spec.local_step != "sgd"
                or spec.train_loop is not None or spec.init_aux is not None or cfg.keep_optimizer
                or cfg.best_validation):
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


def shadow_workers() -> int:
    """Worker processes of the ``parallel`` engine: ``FEDMIST_SHADOW_WORKERS``, else one per core."""
    env = os.environ.get("FEDMIST_SHADOW_WORKERS", "")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ConfigError(f"FEDMIST_SHADOW_WORKERS must be a positive integer, got {env!r}")
        return int(env)
    return available_cores()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells, else the CPU count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _worker_init(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _train_one(cfg: RunConfig, rows: np.ndarray, reference: np.ndarray) -> State:
    """One shadow to completion in a worker process (same calls as the ``inprocess`` engine)."""
    run = open_run(cfg, None, members=rows, reference=reference)
    train_run(run, InProcessFederation())
    return run.state
