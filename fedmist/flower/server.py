"""Server side of the federation: train one or more runs over the connected clients."""

from __future__ import annotations

import os
from collections.abc import Iterable

from flwr.serverapp import Grid

from fedmist.flower import dispatch
from fedmist.flower.federation import DEPLOY_POLL_S, FlowerFederation, wait_for_nodes
from fedmist.runs.rundir import Run, train_run

# Seconds to wait for enough SuperNodes: a deployment's nodes may connect over minutes; a local
# `flwr run` federation has all of its nodes at once, so its ServerApp waits ``FLWR_RUN_NODE_WAIT_S``.
NODE_WAIT_S = float(os.environ.get("FEDMIST_NODE_WAIT", "120"))
FLWR_RUN_NODE_WAIT_S = 15.0
# The in-memory Grid of the simulation engine is polled this often for replies (Flower's default
# 0.1 s costs ~0.05 s per round on average, two rounds per MIST epoch). Over the network (a real
# SuperLink) each poll is an HTTPS request, so the federation polls every DEPLOY_POLL_S instead.
PULL_INTERVAL_S = float(os.environ.get("FEDMIST_PULL_INTERVAL", "0.01"))
# Over the network, clients keep their phase-1 weights for phase 2 (FlowerFederation.hold_weights)
# and send them up only when the server needs them. For side-by-side measurements:
# FEDMIST_HOLD_WEIGHTS=0 sends them both ways as the simulation does; =uplink sends them up every
# round but still names them in phase 2 (the behaviour before they stayed on the clients).
HOLD_MODE = os.environ.get("FEDMIST_HOLD_WEIGHTS", "1")
HOLD_WEIGHTS = HOLD_MODE != "0"


def serve(grid: Grid, runs: Iterable[Run], clients: int, node_wait: float = NODE_WAIT_S) -> None:
    """Train every run in turn on the same nodes (shadow models reuse one simulation's actors)."""
    in_memory = hasattr(grid, "pull_interval")
    if in_memory:
        grid.pull_interval = PULL_INTERVAL_S
    else:  # a real SuperLink: retry replies' objects after 20 ms, not Flower's 1 s (dispatch.py)
        dispatch.install_grid_pull_retry()
    nodes = wait_for_nodes(grid, clients, node_wait)
    poll = PULL_INTERVAL_S if in_memory else DEPLOY_POLL_S
    for run in runs:
        train_run(run, FlowerFederation(grid, nodes[: run.cfg.clients], poll=poll,
                                        hold_weights=HOLD_WEIGHTS and not in_memory,
                                        always_upload=HOLD_MODE == "uplink"))
