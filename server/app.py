"""Flower ServerApp: the MIST epoch loop over the connected ClientApps.

``flwr run .`` builds the config from ``[tool.flwr.app.config]`` (a recipe plus overrides);
``fedmist simulate`` builds its runs itself and passes them to ``make_server_app``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmist.config import RunConfig
from fedmist.flower.server import serve
from fedmist.runner import Run, default_out, open_run, prepare_config

# run-config keys that are not RunConfig fields
APP_KEYS = {"recipe", "out", "resume", "force"}


def run_from_flower_config(run_config: dict) -> Run:
    """The run described by Flower's run-config: ``recipe`` file, then field overrides."""
    recipe = str(run_config.get("recipe", "") or "")
    cfg = RunConfig.from_toml(recipe) if recipe else RunConfig()
    overrides = {k: v for k, v in run_config.items() if k not in APP_KEYS and v != ""}  # "" = recipe's value
    cfg = RunConfig.from_dict(overrides, base=cfg)
    cfg = prepare_config(cfg)
    out = Path(str(run_config.get("out", "") or default_out(cfg)))
    return open_run(cfg, out, resume=bool(run_config.get("resume", False)), force=bool(run_config.get("force", False)))


def make_server_app(runs: Iterable[Run], clients: int) -> ServerApp:
    """A ServerApp that trains the given, already opened runs."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        serve(grid, runs, clients)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = run_from_flower_config(dict(context.run_config))
    serve(grid, [run], run.cfg.clients)
    print(f"run written to {run.path}")
