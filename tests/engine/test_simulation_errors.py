"""When Flower's simulation engine itself dies (e.g. Ray times out at start-up), the user gets
one line naming the cause and the resume path, not Flower's RuntimeError."""

from __future__ import annotations

import dataclasses

import flwr.simulation
import pytest

from fedmist.config import RunConfig
from fedmist.errors import FederationError
from fedmist.runs.rundir import open_run, prepare_config
from fedmist.flower.simulation import simulate_runs


def test_engine_crash_becomes_a_federation_error_with_the_resume_hint(tmp_path, monkeypatch) -> None:
    def crashed(**_kwargs) -> None:  # what flwr 1.42 raises after logging the Ray start-up failure
        raise RuntimeError("An error was encountered. Ending simulation.")

    monkeypatch.setattr(flwr.simulation, "run_simulation", crashed)
    cfg = prepare_config(dataclasses.replace(RunConfig(dataset="synthetic:120x6x2", model="mlp-small",
                                                       defense="sgd", epochs=1)))
    run = open_run(cfg, tmp_path / "run")
    with pytest.raises(FederationError, match=r"simulation engine stopped.*rerun with --resume"):
        simulate_runs([run], cfg.clients)

    def other(**_kwargs) -> None:
        raise RuntimeError("something else")

    monkeypatch.setattr(flwr.simulation, "run_simulation", other)
    with pytest.raises(RuntimeError, match="something else"):  # not ours to reword
        simulate_runs([run], cfg.clients)
