"""Server side of the federation: train one or more runs over the connected clients."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.serverapp import Grid

from fedmist.engine.loop import train
from fedmist.flower.federation import FlowerFederation, wait_for_nodes
from fedmist.runner import Run

NODE_WAIT_S = 120.0


def serve(grid: Grid, runs: Iterable[Run], clients: int) -> None:
    """Train every run in turn on the same nodes (shadow models reuse one simulation's actors)."""
    nodes = wait_for_nodes(grid, clients, NODE_WAIT_S)
    for run in runs:
        run.begin()
        federation = FlowerFederation(grid, nodes[: run.cfg.clients])
        run.state = train(run.cfg, federation, run.state, run.split.members, run.start_epoch, run.on_epoch)
        run.finish()
