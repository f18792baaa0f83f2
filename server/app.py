"""Flower ServerApp: the MIST epoch loop over the connected ClientApps.

``flwr run .`` builds the config from ``[tool.flwr.app.config]`` (a recipe plus overrides);
``fedmist deploy run`` sends the whole config as JSON (``config-json``) so the recipe file need
not exist on the SuperLink machine; ``fedmist simulate`` builds its runs itself and passes them
to ``make_server_app``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmist.config import RunConfig
from fedmist.errors import FedmistError
from fedmist.flower.server import FLWR_RUN_NODE_WAIT_S, NODE_WAIT_S, serve
from fedmist.runs.console import epoch_line
from fedmist.runs.rundir import Run, default_out, open_run, prepare_config

# run-config keys that are not RunConfig fields
APP_KEYS = {"recipe", "out", "resume", "force", "config-json", "node-wait"}
# The line ``fedmist deploy run`` looks for in the streamed log to print the summary table.
SUMMARY_MARK = "FEDMIST-SUMMARY "


def run_from_flower_config(run_config: dict) -> Run:
    """The run described by Flower's run-config: ``config-json`` or the ``recipe`` file, then
    field overrides."""
    recipe = str(run_config.get("recipe", "") or "")
    config_json = str(run_config.get("config-json", "") or "")
    if config_json:
        cfg = RunConfig.from_dict(json.loads(config_json))
    else:
        cfg = RunConfig.from_toml(recipe) if recipe else RunConfig()
    overrides = {k: v for k, v in run_config.items() if k not in APP_KEYS and v != ""}  # "" = recipe's value
    cfg = RunConfig.from_dict(overrides, base=cfg)
    cfg = prepare_config(cfg)
    out = Path(str(run_config.get("out", "") or default_out(cfg)))
    return open_run(cfg, out, resume=bool(run_config.get("resume", False)), force=bool(run_config.get("force", False)))


def node_wait(run_config: dict) -> float:
    """Seconds to wait for enough SuperNodes: ``node-wait`` (a local ``flwr run`` federation has all
    its nodes at once, so a short wait names a too-small federation quickly); ``fedmist deploy run``
    (``config-json``) waits at least NODE_WAIT_S for nodes that connect over time."""
    wait = float(run_config.get("node-wait", "") or FLWR_RUN_NODE_WAIT_S)
    return max(wait, NODE_WAIT_S) if run_config.get("config-json") else wait


def make_server_app(runs: Iterable[Run], clients: int) -> ServerApp:
    """A ServerApp that trains the given, already opened runs."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        serve(grid, runs, clients)

    return server


def _print_epoch(run: Run, row: dict) -> None:

    line = epoch_line(run.cfg.defense, row).replace("[bold]", "").replace("[/]", "")
    dropped = row.get("dropped") or []
    print(f"{line} | epoch {row['epoch']}/{run.cfg.epochs}" + (f" | dropped {dropped}" if dropped else ""), flush=True)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        run = run_from_flower_config(dict(context.run_config))
        print(f"fedmist: {run.cfg.defense} on {run.cfg.dataset}, C={run.cfg.clients}, run dir {run.path.resolve()}"
              + (f", resuming at epoch {run.start_epoch}" if run.start_epoch > 1 else ""), flush=True)
        run.on_report = _print_epoch
        if run.start_epoch <= run.cfg.epochs:
            serve(grid, [run], run.cfg.clients, node_wait(dict(context.run_config)))
        else:
            run.finish()
    except FedmistError as err:  # one line in `flwr run --stream` / `flwr log`, not a traceback
        print(f"error: {err}", flush=True)
        raise SystemExit(2) from None
    summary = json.loads((run.path / "metrics.json").read_text())["summary"]
    print(SUMMARY_MARK + json.dumps({"run_dir": str(run.path.resolve()), "summary": summary}, default=float), flush=True)
    print(f"run written to {run.path}")
