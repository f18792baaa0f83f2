"""Run fedmist's ServerApp and ClientApp in Flower's simulation engine (Ray backend)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence

from fedmist.errors import FederationError
from fedmist.runs.inprocess import InProcessFederation
from fedmist.runs.rundir import Run, train_run
from fedmist.runs.shadows import ShadowTrainer

RAY_ADDRESS_ENV = "FEDMIST_RAY_ADDRESS"  # an existing Ray cluster (HOST:PORT) for every simulation


def backend_config(cpus_per_client: float, gpus_per_client: float, ray_address: str | None = None) -> dict:
    """Client resources decide how many ClientApps run at once: 2 cores / 1 CPU each = 2 actors.

    ``ray_address`` (or $FEDMIST_RAY_ADDRESS) joins an existing cluster instead of starting one."""
    init_args: dict = {"logging_level": logging.ERROR, "log_to_driver": False}
    # "local": start a private Ray instance, never silently join a cluster another `ray start` left
    # running on this machine (Ray's default when no address is given).
    init_args["address"] = ray_address or os.environ.get(RAY_ADDRESS_ENV) or "local"
    return {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": gpus_per_client},
            "init_args": init_args}


def simulate_runs(runs: Sequence[Run], clients: int, ray_address: str | None = None) -> None:
    """Train ``runs`` one after another in a single simulation with ``clients`` virtual SuperNodes.

    Raises the ServerApp's exception (e.g. a FederationError) if training fails.
    """
    from flwr.simulation import run_simulation

    from clients.app import app as client_app
    from fedmist.flower import dispatch
    from server.app import make_server_app

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    logging.getLogger("flwr").setLevel(logging.ERROR)
    dispatch.install()
    first = runs[0].cfg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # flwr.simulation.run_simulation is marked deprecated in favour of `flwr run`, which cannot
        # take Python objects; it is still the supported in-process entry point in flwr 1.42.
        try:
            run_simulation(
                server_app=make_server_app(runs, clients),
                client_app=client_app,
                num_supernodes=clients,
                backend_config=backend_config(first.cpus_per_client, first.gpus_per_client, ray_address),
            )
        except RuntimeError as err:
            if "Ending simulation" not in str(err):
                raise
            # Flower has logged the engine's own traceback above; say what it means in one line.
            done = [r.path for r in runs if r.path is not None]
            raise FederationError(
                "Flower's simulation engine stopped before training finished (see its log above; a "
                "common cause is Ray timing out at start-up on an overloaded machine)"
                + (f"; finished epochs are checkpointed in {done[0]}: rerun with --resume" if done else "")
            ) from None


def train_runs(runs: Sequence[Run], clients: int, engine: str = "flower") -> None:
    """Train opened runs to completion with the Flower simulation (``flower``) or the same
    functions in this process without Flower (``inprocess``; identical weights, no start-up)."""
    if engine == "flower":
        simulate_runs(runs, clients)
        return
    if engine != "inprocess":
        raise ValueError(f"unknown engine {engine!r}")
    for run in runs:
        train_run(run, InProcessFederation())


def shadow_trainer_factory(engine: str = "flower") -> Callable:
    """``(loaded run, audit seed) -> ShadowTrainer``, the factory ``fedmist.audit`` expects; the
    ``flower`` engine trains shadows in this module's simulation."""
    def factory(run, audit_seed: int) -> ShadowTrainer:
        return ShadowTrainer(run.config, audit_seed, engine, simulate=simulate_runs)
    return factory
