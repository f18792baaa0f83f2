"""The epoch loop with dropouts (cfg.min_clients): the partitions of clients that did not reply
validly are skipped, the others are averaged, the epoch records who dropped out, and the loop
stops with a FederationError when fewer than min_clients valid replies remain. The transport is
the in-process federation with one client's replies withheld, as a failing node would."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedmist.config import RunConfig
from fedmist.runs.inprocess import InProcessFederation
from fedmist.engine.loop import run_epoch
from fedmist.errors import FederationError
from fedmist.flower import faults
from fedmist.runs.rundir import open_run


class Withholding(InProcessFederation):
    """Runs every job but drops the replies of ``lost`` clients in ``phases``."""

    def __init__(self, lost: set[int], phases: set[str]) -> None:
        self.lost, self.phases, self.rejected = lost, phases, {}

    def _drop(self, phase: str, results: list) -> list:
        if phase not in self.phases:
            return results
        self.rejected = {c: "no reply within 1 s" for c in self.lost}
        return [r for r in results if r.client not in self.lost]

    def local(self, cfg, jobs):
        return self._drop("local", super().local(cfg, jobs))

    def xdiff(self, cfg, jobs):
        return self._drop("xdiff", super().xdiff(cfg, jobs))


def test_a_dropped_client_is_left_out_of_targets_and_average(tiny_cfg: RunConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, clients=4, min_clients=3)
    run = open_run(cfg, None)
    state, rep = run_epoch(cfg, run.spec, Withholding({2}, {"local"}), run.state, run.split.members, 1)
    assert rep.extra["dropped"] == [2] and "no reply" in rep.extra["dropout_reasons"]["2"]
    # Differs from the complete epoch (partition 2 untrained, its peers' targets from 2 models).
    full, _ = run_epoch(cfg, run.spec, Withholding(set(), set()), run.state, run.split.members, 1)
    assert not all(torch.equal(state[k], full[k]) for k in state)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_a_dropout_in_phase_2_averages_the_others(tiny_cfg: RunConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, clients=3, min_clients=2)
    run = open_run(cfg, None)
    state, rep = run_epoch(cfg, run.spec, Withholding({0}, {"xdiff"}), run.state, run.split.members, 1)
    assert rep.extra["dropped"] == [0]


def test_below_min_clients_the_epoch_fails_with_the_reason(tiny_cfg: RunConfig) -> None:
    cfg = dataclasses.replace(tiny_cfg, clients=3, min_clients=3)
    run = open_run(cfg, None)
    with pytest.raises(FederationError, match=r"phase 1: .*missing \[1\]"):
        run_epoch(cfg, run.spec, Withholding({1}, {"local"}), run.state, run.split.members, 1)


def test_fault_spec_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMIST_FAULT", "nan:1,2::99")
    f = faults.current()
    assert f is not None and f.hits(2, 5, 99) and not f.hits(2, 5, 3) and not f.hits(0, 1, 99)
    state = faults.corrupt(1, 1, 99, {"w": torch.ones(2)})
    assert torch.isnan(state["w"]).all()
    monkeypatch.setenv("FEDMIST_FAULT", "boom:1")
    with pytest.raises(ValueError, match="FEDMIST_FAULT"):
        faults.current()
