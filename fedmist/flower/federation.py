"""The engine's ``Federation`` over a Flower ``Grid``: one message per job, replies validated."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedmist.config import RunConfig
from fedmist.engine.jobs import LocalJob, LocalResult, PredictJob, PredictResult, XdiffJob, XdiffResult
from fedmist.errors import FederationError
from fedmist.flower import messages

J = TypeVar("J", LocalJob, XdiffJob, PredictJob)
R = TypeVar("R", LocalResult, XdiffResult, PredictResult)


def wait_for_nodes(grid: Grid, n: int, timeout: float) -> list[int]:
    """Node ids of the first ``n`` connected nodes (sorted, so client c is always the same node)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n:
            return nodes[:n]
        if time.monotonic() > deadline:
            raise FederationError(f"only {len(nodes)} of {n} clients connected within {timeout:.0f} s")
        time.sleep(0.2)


class FlowerFederation:
    def __init__(self, grid: Grid, nodes: list[int]) -> None:
        self.grid = grid
        self.nodes = nodes
        self.round = 0

    def local(self, cfg: RunConfig, jobs: list[LocalJob]) -> list[LocalResult]:
        return self._round(cfg, messages.TRAIN, jobs, messages.pack_local, messages.unpack_local_result)

    def xdiff(self, cfg: RunConfig, jobs: list[XdiffJob]) -> list[XdiffResult]:
        return self._round(cfg, messages.XDIFF, jobs, messages.pack_xdiff, messages.unpack_xdiff_result)

    def predict(self, cfg: RunConfig, jobs: list[PredictJob]) -> list[PredictResult]:
        return self._round(cfg, messages.PREDICT, jobs, messages.pack_predict, messages.unpack_predict_result)

    def _round(self, cfg: RunConfig, kind: str, jobs: list[J], pack: Callable[[RunConfig, J], RecordDict],
               unpack: Callable[[RecordDict, J], R]) -> list[R]:
        self.round += 1
        by_node = {}
        out = []
        for job in jobs:
            node = self.nodes[job.client]
            out.append(Message(pack(cfg, job), dst_node_id=node, message_type=kind, group_id=str(self.round)))
            by_node[node] = job
        replies = list(self.grid.send_and_receive(out, timeout=cfg.round_timeout))
        results = []
        for reply in replies:
            job = by_node[reply.metadata.src_node_id]
            if reply.has_error():
                raise FederationError(f"client {job.client} failed in {kind} (epoch {job.epoch}): {reply.error.reason}")
            try:
                results.append(unpack(reply.content, job))
            except (messages.BadReply, KeyError) as err:
                raise FederationError(f"rejected reply of client {job.client} in {kind} (epoch {job.epoch}): {err}") from None
        if len(results) < len(jobs):
            got = {r.client for r in results}
            missing = sorted(j.client for j in jobs if j.client not in got)
            raise FederationError(f"no reply from client(s) {missing} in {kind} within {cfg.round_timeout:.0f} s")
        return results
