"""What travels in a message (fedmist/flower/messages.py) and the held phase-1 weights.

A deployment pays per Flower object and per byte on every hop, so a record's arrays travel as one
``.npz`` Array, and ``train.xdiff`` names the client's own phase-1 weights instead of carrying them
back. Both must change nothing in the numbers: the run through the real ClientApp handlers equals
the in-process loop, also when a client lost its weights and the server has to send them.
"""

from __future__ import annotations

import uuid
from collections import Counter

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Error, Message, RecordDict

from flwr.supercore.task_identity import TaskIdentity

from clients import app as client_app
from fedmist.config import RunConfig
from fedmist.engine.loop import train
from fedmist.flower import messages
from fedmist.flower.federation import FlowerFederation
from fedmist.runs.inprocess import InProcessFederation
from fedmist.runs.rundir import open_run, prepare_config

HANDLERS = {messages.TRAIN: client_app.train, messages.XDIFF: client_app.xdiff, messages.PREDICT: client_app.predict}


def test_a_bundle_is_one_array_and_gives_back_every_array_exactly() -> None:
    named = {"w": torch.randn(7, 5).t().numpy(), "count": np.array(3, dtype=np.int64),
             "mask": np.array([True, False]), "file": np.arange(4, dtype=np.int32), "empty": np.empty(0)}
    record = messages.bundle(named)
    assert list(record.keys()) == ["npz"] and record["npz"].stype == messages.NPZ
    back = messages.unbundle(record)
    assert list(back) == list(named)  # order kept (a state dict's order is the model's)
    for k, v in named.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v)


def test_anything_but_a_bundle_is_a_bad_reply() -> None:
    with pytest.raises(messages.BadReply, match="expected one numpy.npz array"):
        messages.unbundle(ArrayRecord({"w": Array(np.zeros(3))}))
    broken = Array(dtype="uint8", shape=(5,), stype=messages.NPZ, data=b"nozip")
    with pytest.raises(messages.BadReply, match="unreadable"):
        messages.unbundle(ArrayRecord({"npz": broken}))


class HandlerGrid:
    """A Grid whose nodes are the ClientApp's own handlers, called in this process: the
    federation's messages go through the real packing, handlers and validation, without a network.
    ``forget`` empties the ClientApp's held weights before every ``train.xdiff`` (a restarted
    process)."""

    def __init__(self, nodes: int, forget: bool = False) -> None:
        self.nodes, self.forget = list(range(1, nodes + 1)), forget
        self.pending: list[Message] = []
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return self.nodes

    def push_messages(self, msgs: list[Message]) -> list[str]:
        for m in msgs:
            m.metadata.__dict__["_message_id"] = str(uuid.uuid4())
        self.pending += msgs
        self.sent += msgs
        return [m.metadata.message_id for m in msgs]

    def pull_messages(self, ids: list[str]) -> list[Message]:
        replies = []
        for m in [m for m in self.pending if m.metadata.message_id in ids]:
            self.pending.remove(m)
            if self.forget and m.metadata.message_type == messages.XDIFF:
                client_app._HELD.clear()
            ctx = Context(run_id=0, node_id=m.metadata.dst_node_id, node_config={}, state=RecordDict(), run_config={})
            try:
                replies.append(HANDLERS[m.metadata.message_type](m, ctx))
            except Exception as ex:  # noqa: BLE001 - as Flower: a raising handler becomes an error reply
                replies.append(Message(Error(code=0, reason=f"{type(ex)}:<'{ex}'>"), reply_to=m))
        return replies


SETS = {"dataset": "synthetic:240x12x3", "model": "mlp-small", "train_size": "120", "batch_size": "20",
        "epochs": "2", "clients": "3", "lambda": "5.0", "seed": "4"}


def _train_through(grid: HandlerGrid, log: list[str]) -> dict[str, torch.Tensor]:
    cfg = prepare_config(RunConfig.from_dict(dict(SETS)))
    run = open_run(cfg, None)
    federation = FlowerFederation(grid, grid.nodes, poll=0.0, log=log.append, hold_weights=True)
    return train(cfg, run.spec, federation, run.state, run.split.members)


def _reference() -> dict[str, torch.Tensor]:
    cfg = prepare_config(RunConfig.from_dict(dict(SETS)))
    run = open_run(cfg, None)
    return train(cfg, run.spec, InProcessFederation(), run.state, run.split.members)


@pytest.mark.parametrize("forget", [False, True], ids=["held", "lost-and-resent"])
def test_held_phase1_weights_give_the_in_process_result(forget: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what a ServerApp process has set
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    client_app._HELD.clear()
    grid, log = HandlerGrid(3, forget=forget), []
    got = _train_through(grid, log)
    expected = _reference()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)
    xdiff = [m for m in grid.sent if m.metadata.message_type == messages.XDIFF]
    named = Counter("weights" not in m.content.array_records for m in xdiff)
    if forget:  # every named message was answered NOT_HELD and sent again with the weights
        assert named[True] == named[False] == 3 * 2, named
        assert sum("no longer holds" in line for line in log) == 6, log
    else:  # no xdiff message carried weights
        assert named == Counter({True: 3 * 2}), named
        assert not any("no longer holds" in line for line in log), log
    assert not any("dropout" in line for line in log), log


def test_a_full_predict_reply_takes_any_class_count_but_one_row_per_asked_row() -> None:
    from fedmist.training.jobs import PredictJob, PredictResult

    job = PredictJob(0, 1, {}, np.arange(4), full=True)

    def reply(probs: np.ndarray) -> RecordDict:
        return messages.pack_predict_result(PredictResult(0, probs, 0.1))

    assert messages.unpack_predict_result(reply(np.full((4, 7), 1 / 7)), job).probs.shape == (4, 7)
    with pytest.raises(messages.BadReply, match=r"expected \(4, 'any'\)"):
        messages.unpack_predict_result(reply(np.full((3, 7), 1 / 7)), job)
    with pytest.raises(messages.BadReply, match="has shape"):
        messages.unpack_predict_result(reply(np.full(4, 0.5)), job)
