"""Flower ClientApp: one MIST sub-model. Handlers unpack a message, call fedmist, pack the reply.

Node config (``flower-supernode --node-config``, set by ``fedmist deploy supernode``):
``data-dir`` is where this machine keeps the dataset files; it replaces the server's ``data_dir``
(in the virtual federation the server sends row numbers, so every node needs the dataset file).
``partition-id`` / ``num-partitions`` name the node's partition for the operator.
Fault injection for tests: see ``fedmist.flower.faults`` (``FEDMIST_FAULT``).
"""

from __future__ import annotations

import uuid

import torch
from flwr.app import Context, Message, MetricRecord
from flwr.clientapp import ClientApp

from fedmist.config import RunConfig
from fedmist.defenses import get_defense
from fedmist.engine.client_steps import run_local, run_predict, run_xdiff
from fedmist.flower import faults, messages
from fedmist.training.workspace import get_workspace

app = ClientApp()

# Each client slot's last phase-1 reply, by the digest of its packed weights: a deployed
# SuperNode keeps one ClientApp process, so ``train.xdiff`` may name these weights instead of
# carrying them back (messages.pack_xdiff). Another process answers NotHeld and gets them sent.
_HELD: dict[int, tuple[str, messages.State]] = {}


def _threads(cfg_cpus: float) -> None:
    # One torch thread per CPU granted to this client: more threads than cores under Ray's
    # concurrent actors slowed a small model ~35x on this 2-core machine (DESIGN.md).
    torch.set_num_threads(max(1, int(cfg_cpus)))


def _reply(content, msg: Message, context: Context) -> Message:
    """The reply, tagged with this SuperNode's ``partition-id`` so the server's logs (dropouts)
    can name the machine an operator started, not only the client slot it served."""
    content["node"] = MetricRecord({"partition-id": int(context.node_config.get("partition-id", -1))})
    return Message(content, reply_to=msg)


def _local_cfg(cfg: RunConfig, context: Context) -> RunConfig:
    """The server's config with this node's data directory, if the node has one."""
    data_dir = str(context.node_config.get("data-dir", "") or "")
    if data_dir:
        cfg.data_dir = data_dir
    _threads(cfg.cpus_per_client)
    return cfg


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Phase 1: local SGD pass, then true-class probabilities on the peers' rows."""
    cfg, job = messages.unpack_local(msg.content)
    cfg = _local_cfg(cfg, context)
    faults.before(job.client, job.epoch, cfg.seed)
    result = run_local(get_workspace(cfg), cfg, job, get_defense(cfg.defense))
    result.state = faults.corrupt(job.client, job.epoch, cfg.seed, result.state)
    if not messages.hold_asked(msg.content):
        return _reply(messages.pack_local_result(result), msg, context)
    # Weights the server would not check stay here only when finite: NaN/Inf ones go up, to be
    # rejected (and logged with this node's partition-id) like any invalid reply.
    if job.upload or not messages.all_finite(result.state):
        reply = messages.pack_local_result(result)
        _HELD[job.client] = (messages.weights_digest(reply), result.state)
        return _reply(reply, msg, context)
    name = uuid.uuid4().hex
    _HELD[job.client] = (name, result.state)
    return _reply(messages.pack_local_result(result, held=name), msg, context)


@app.train("xdiff")
def xdiff(msg: Message, context: Context) -> Message:
    """Phase 2: cross-difference pass against the targets (or the peers' weights)."""
    cfg, job = messages.unpack_xdiff(msg.content, held=dict(_HELD.values()))
    cfg = _local_cfg(cfg, context)
    faults.before(job.client, job.epoch, cfg.seed)
    redo = messages.redo_job(msg.content, job)
    if redo is not None:  # this process lost phase-1 weights the server never had: the same pass again
        job.state = run_local(get_workspace(cfg), cfg, redo, get_defense(cfg.defense)).state
    result = run_xdiff(get_workspace(cfg), cfg, job)
    result.state = faults.corrupt(job.client, job.epoch, cfg.seed, result.state)
    return _reply(messages.pack_xdiff_result(result), msg, context)


@app.query("predict")
def predict(msg: Message, context: Context) -> Message:
    """True-class probabilities of the given weights on the given rows (a separate round)."""
    cfg, job = messages.unpack_predict(msg.content)
    cfg = _local_cfg(cfg, context)
    faults.before(job.client, job.epoch, cfg.seed)
    return _reply(messages.pack_predict_result(run_predict(get_workspace(cfg), cfg, job)), msg, context)
