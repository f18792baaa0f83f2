"""Shadow models train with the target's recipe, through the Flower engine, reproducibly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fedmist.config import RunConfig
from fedmist.errors import ConfigError
from fedmist.runs.rundir import open_run, prepare_config
from fedmist.flower.simulation import simulate_runs
from fedmist.runs.shadows import ShadowTrainer, shadow_seed


def _train(trainer: ShadowTrainer, jobs: list[tuple[int, np.ndarray]]) -> dict[int, dict[str, torch.Tensor]]:
    out: dict[int, dict[str, torch.Tensor]] = {}
    trainer.train_all(jobs, lambda i, state: out.__setitem__(i, state))
    return out


def test_flower_shadows_equal_in_process_shadows_and_keep_the_recipe(tiny_cfg: RunConfig) -> None:
    target = prepare_config(dataclasses.replace(tiny_cfg, epochs=2))
    pool = np.arange(200)
    rng = np.random.default_rng(0)
    jobs = [(i, np.sort(rng.choice(pool, 100, replace=False))) for i in range(2)]
    flower = _train(ShadowTrainer(target, audit_seed=0, engine="flower", simulate=simulate_runs), jobs)
    plain = _train(ShadowTrainer(target, audit_seed=0, engine="inprocess"), jobs)
    assert sorted(flower) == [0, 1]
    for i in (0, 1):
        for k in plain[i]:
            torch.testing.assert_close(flower[i][k], plain[i][k], rtol=0, atol=1e-6)
    assert not torch.allclose(plain[0]["net.0.weight"], plain[1]["net.0.weight"])  # own seed, own rows

    trainer = ShadowTrainer(target, audit_seed=0, engine="inprocess")
    cfg0 = trainer.config_for(0)
    assert cfg0.seed == shadow_seed(target.seed, 0, 0) != target.seed
    assert cfg0.dataset_seed == target.dataset_seed  # same synthetic rows as the target
    same = {f.name for f in dataclasses.fields(RunConfig)} - {"seed", "data_seed", "eval_every"}
    assert all(getattr(cfg0, f) == getattr(target, f) for f in same)  # the target's recipe
    run = open_run(cfg0, None, members=jobs[0][1])
    assert np.array_equal(run.split.members, jobs[0][1])


def test_stacked_shadows_equal_one_by_one(tiny_cfg: RunConfig) -> None:
    target = prepare_config(dataclasses.replace(tiny_cfg, defense="sgd", epochs=3))
    rng = np.random.default_rng(1)
    jobs = [(i, np.sort(rng.choice(np.arange(200), 100, replace=False))) for i in range(3)]
    stacked = _train(ShadowTrainer(target, audit_seed=0, engine="stacked"), jobs)
    one_by_one = _train(ShadowTrainer(target, audit_seed=0, engine="inprocess"), jobs)
    for i in range(3):
        for k in one_by_one[i]:
            torch.testing.assert_close(stacked[i][k], one_by_one[i][k], rtol=1e-5, atol=1e-5)
    mist = ShadowTrainer(prepare_config(dataclasses.replace(tiny_cfg, epochs=1)), 0, engine="stacked")
    with pytest.raises(ConfigError, match="stacked shadow engine"):
        _train(mist, jobs[:1])


def test_parallel_shadows_equal_in_process_shadows(tiny_cfg: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes (1 torch thread each) train the same weights as one by one in this process."""
    target = prepare_config(dataclasses.replace(tiny_cfg, epochs=2))  # MIST: both phases, peers' predictions
    rng = np.random.default_rng(2)
    jobs = [(i, np.sort(rng.choice(np.arange(200), 100, replace=False))) for i in range(3)]
    monkeypatch.setenv("FEDMIST_SHADOW_WORKERS", "2")
    parallel = _train(ShadowTrainer(target, audit_seed=0, engine="parallel"), jobs)
    plain = _train(ShadowTrainer(target, audit_seed=0, engine="inprocess"), jobs)
    assert sorted(parallel) == [0, 1, 2]
    for i in range(3):
        for k in plain[i]:
            torch.testing.assert_close(parallel[i][k], plain[i][k], rtol=0, atol=1e-6)
    monkeypatch.setenv("FEDMIST_SHADOW_WORKERS", "two")
    with pytest.raises(ConfigError, match="FEDMIST_SHADOW_WORKERS"):
        _train(ShadowTrainer(target, audit_seed=0, engine="parallel"), jobs)
