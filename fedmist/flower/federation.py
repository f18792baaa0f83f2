"""The engine's ``Federation`` over a Flower ``Grid``: one message per job, replies validated.

Fault tolerance: a job whose node is offline, whose reply is an error, is invalid (NaN/Inf, wrong
names or shapes) or does not arrive within ``cfg.round_timeout`` is *rejected*: logged with the
client and the reason, kept out of the results, and counted as a dropout. A round returns fewer
results than jobs only when ``cfg.min_clients`` allows it; otherwise it raises FederationError.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import TypeVar

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedmist.config import RunConfig
from fedmist.engine.loop import quorum
from fedmist.errors import FederationError
from fedmist.flower import messages
from fedmist.training.jobs import (
    HeldOnClient,
    LocalJob,
    LocalResult,
    PredictJob,
    PredictResult,
    XdiffJob,
    XdiffResult,
)

J = TypeVar("J", LocalJob, XdiffJob, PredictJob)
R = TypeVar("R", LocalResult, XdiffResult, PredictResult)
Log = Callable[[str], None]

# Seconds between polls for replies over the network (the in-memory simulation grid polls faster).
DEPLOY_POLL_S = 0.1
# FEDMIST_ROUND_TIMING=1: log where each round's time goes on the server (push, each reply's
# arrival, time inside pull_messages, i.e. fetching replies' objects, and unpacking).
ROUND_TIMING = os.environ.get("FEDMIST_ROUND_TIMING", "") not in ("", "0")


def wait_for_nodes(grid: Grid, n: int, timeout: float) -> list[int]:
    """Node ids of the first ``n`` connected nodes (sorted, so client c is always the same node)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n:
            return nodes[:n]
        if time.monotonic() > deadline:
            raise FederationError(
                f"the federation has {len(nodes)} SuperNode(s) after {timeout:.0f} s but this run needs {n} "
                f"(clients = {n}): set options.num-supernodes = {n} for the federation in $FLWR_HOME/config.toml "
                f"(flwr run), start {n - len(nodes)} more SuperNode(s) (deployment), or run with clients = "
                f"{max(len(nodes), 1)}")
        time.sleep(0.2)


class FlowerFederation:
    """``hold_weights`` (deployments): clients keep their phase-1 weights and ``train.xdiff`` names
    them instead of sending them back. When the server needs only the probabilities
    (``LocalJob.upload`` False: MIST's virtual federation) the weights do not travel up either, so
    of an epoch's four weight transfers per client only the global model's and phase 2's remain.
    A client that lost them (restarted process) answers NOT_HELD and gets them sent, or, when the
    server never had them, the phase-1 job to run again (the same seeded pass) before phase 2."""

    def __init__(self, grid: Grid, nodes: list[int], poll: float = DEPLOY_POLL_S, log: Log = print,
                 hold_weights: bool = False, always_upload: bool = False) -> None:
        self.grid = grid
        self.nodes = nodes
        self.poll = poll
        self.log = log
        self.hold_weights = hold_weights
        self.always_upload = always_upload  # phase-1 weights travel up even when only named later
        self.held: dict[int, tuple[str, dict]] = {}  # client -> (name, state) of its last phase-1 reply
        self.phase1: dict[int, LocalJob] = {}  # client -> its last phase-1 job (to redo it, see xdiff)
        self.round = 0
        self.rejected: dict[int, str] = {}  # client -> why, for the last round (read by the epoch loop)
        self.partition_of: dict[int, int] = {}  # node -> its SuperNode's partition-id (from its replies)

    def local(self, cfg: RunConfig, jobs: list[LocalJob]) -> list[LocalResult]:
        self.held = {}
        if self.always_upload:
            jobs = [dataclasses.replace(job, upload=True) for job in jobs]
        self.phase1 = {job.client: job for job in jobs} if self.hold_weights else {}

        def unpack(content: RecordDict, job: LocalJob) -> LocalResult:
            result = messages.unpack_local_result(content, job)
            if self.hold_weights:
                name = result.state.name if isinstance(result.state, HeldOnClient) else messages.weights_digest(content)
                self.held[job.client] = (name, result.state)
            return result

        pack = functools.partial(messages.pack_local, hold=self.hold_weights)
        return self._round(cfg, messages.TRAIN, jobs, pack, unpack)

    def xdiff(self, cfg: RunConfig, jobs: list[XdiffJob]) -> list[XdiffResult]:
        def pack_named(cfg: RunConfig, job: XdiffJob) -> RecordDict:
            name, state = self.held.get(job.client, (None, None))
            return messages.pack_xdiff(cfg, job, held=name if state is job.state else None)

        def resend(cfg: RunConfig, job: XdiffJob) -> RecordDict:
            if isinstance(job.state, HeldOnClient):
                return messages.pack_xdiff(cfg, job, redo=self.phase1[job.client])
            return messages.pack_xdiff(cfg, job)

        def unpack(content: RecordDict, job: XdiffJob) -> XdiffResult:
            like = self.phase1[job.client].state if isinstance(job.state, HeldOnClient) else None
            return messages.unpack_xdiff_result(content, job, like)

        try:
            return self._round(cfg, messages.XDIFF, jobs, pack_named, unpack, resend=resend)
        finally:
            self.held, self.phase1 = {}, {}

    def predict(self, cfg: RunConfig, jobs: list[PredictJob]) -> list[PredictResult]:
        return self._round(cfg, messages.PREDICT, jobs, messages.pack_predict, messages.unpack_predict_result)

    def _round(self, cfg: RunConfig, kind: str, jobs: list[J], pack: Callable[[RunConfig, J], RecordDict],
               unpack: Callable[[RecordDict, J], R],
               resend: Callable[[RunConfig, J], RecordDict] | None = None) -> list[R]:
        """One message per job, replies validated; a NOT_HELD error reply is answered once more
        with ``resend``'s message (the weights themselves) within the same deadline."""
        self.round += 1
        self.rejected = {}
        t0 = time.perf_counter()
        pending = self._send(cfg, kind, jobs, pack)
        t_pushed = time.perf_counter()
        arrivals: list[float] = []
        in_pull = 0.0
        results: dict[int, R] = {}
        deadline = time.monotonic() + cfg.round_timeout
        while pending:
            t_pull = time.perf_counter()
            replies = self.grid.pull_messages(list(pending))
            in_pull += time.perf_counter() - t_pull
            for reply in replies:
                arrivals.append(time.perf_counter() - t0)
                job = pending.pop(reply.metadata.reply_to_message_id, None)
                if job is None:
                    continue
                if reply.has_error():
                    if resend is not None and messages.NOT_HELD in reply.error.reason:
                        what = "its phase-1 job to redo" if isinstance(job.state, HeldOnClient) else "them"
                        self.log(f"client {job.client} no longer holds its phase-1 weights; sending {what}")
                        pending.update(self._send(cfg, kind, [job], resend))
                    else:
                        self._reject(kind, job, f"client error: {reply.error.reason}")
                    continue
                self._remember_partition(reply)
                try:
                    results[job.client] = unpack(reply.content, job)
                except (messages.BadReply, KeyError, ValueError, TypeError) as err:
                    self._reject(kind, job, f"bad reply: {err}")
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(self.poll)
        for job in pending.values():
            self._reject(kind, job, f"no reply within {cfg.round_timeout:g} s")
        if ROUND_TIMING:
            self.log(f"timing: {kind} round {self.round}: {time.perf_counter() - t0:.2f} s; pack+push "
                     f"{t_pushed - t0:.2f} s, replies at {', '.join(f'{a:.2f}' for a in arrivals)} s, "
                     f"in pull_messages {in_pull:.2f} s")
        need = quorum(cfg, len(jobs))
        if len(results) < need:
            detail = "; ".join(f"client {c}: {why}" for c, why in sorted(self.rejected.items()))
            raise FederationError(f"{kind} round {self.round}: {len(results)} valid replies of {len(jobs)}, "
                                  f"{need} needed (min_clients={cfg.min_clients}); {detail}")
        return [results[c] for c in sorted(results)]

    def _send(self, cfg: RunConfig, kind: str, jobs: list[J], pack: Callable[[RunConfig, J], RecordDict]) -> dict[str, J]:
        """Push one message per job to a live node; return message id -> job."""
        live = set(self.grid.get_node_ids())
        out: list[tuple[Message, J]] = []
        for job in jobs:
            node = self.nodes[job.client]
            if node not in live:
                self._reject(kind, job, f"SuperNode {node} is offline")
                continue
            msg = Message(pack(cfg, job), dst_node_id=node, message_type=kind, group_id=str(self.round))
            out.append((msg, job))
        accepted = {str(i) for i in self.grid.push_messages([m for m, _ in out]) if i} if out else set()
        pending: dict[str, J] = {}
        for msg, job in out:  # push_messages sets each message's id (it may skip refused ones)
            mid = str(msg.metadata.message_id)
            if mid in accepted:
                pending[mid] = job
            else:
                self._reject(kind, job, "the SuperLink refused the message")
        return pending

    def _remember_partition(self, reply: Message) -> None:
        record = reply.content.metric_records.get("node")
        if record is not None and int(record.get("partition-id", -1)) >= 0:
            self.partition_of[reply.metadata.src_node_id] = int(record["partition-id"])

    def _reject(self, kind: str, job: LocalJob | XdiffJob | PredictJob, why: str) -> None:
        self.rejected[job.client] = why
        node = self.nodes[job.client]
        where = f"node {node}" + (f", SuperNode partition-id {self.partition_of[node]}" if node in self.partition_of else "")
        self.log(f"dropout: client {job.client} ({where}) in {kind}, epoch {job.epoch}: "
                 f"{why}; its reply is left out of this round")
