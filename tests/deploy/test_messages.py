"""What travels in a message (fedmist/flower/messages.py) and the held phase-1 weights.

A deployment pays per Flower object and per byte on every hop, so a record's arrays travel as one
``.npz`` Array, and ``train.xdiff`` names the client's own phase-1 weights instead of carrying them
back. Both must change nothing in the numbers: the run through the real ClientApp handlers equals
the in-process loop, also when a client lost its weights and the server has to send them.
"""

from __future__ import annotations

import json
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


NAMED = {"w": torch.randn(7, 5).t().numpy(), "count": np.array(3, dtype=np.int64),
         "mask": np.array([True, False]), "file": np.arange(4, dtype=np.int32), "empty": np.empty(0),
         "half": np.array([1.5, -2.0], dtype=np.float16), "big-endian": np.arange(3, dtype=">i4")}


@pytest.mark.parametrize("fmt", ["", "npz"], ids=["bundle", "npz"])
def test_a_bundle_is_one_array_and_gives_back_every_array_exactly(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMIST_BUNDLE", fmt)
    record = messages.bundle(NAMED)
    assert list(record.keys()) == ["bundle"]
    assert record["bundle"].stype == (messages.NPZ if fmt else messages.BUNDLE)
    back = messages.unbundle(record)
    assert list(back) == list(NAMED)  # order kept (a state dict's order is the model's)
    for k, v in NAMED.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v)
        assert back[k].flags.writeable  # torch.from_numpy of a read-only view would warn


def test_a_bundles_arrays_start_aligned_and_its_bytes_are_the_arrays_bytes() -> None:
    data = messages.bundle({"a": np.arange(3, dtype=np.uint8), "b": np.array([1.0, 2.0])})["bundle"].data
    header_len = int.from_bytes(data[:8], "little")
    entries = json.loads(data[8:8 + header_len])
    assert entries == [["a", "|u1", [3], 0], ["b", "<f8", [2], 64]]
    start = -(-(8 + header_len) // 64) * 64
    assert data[start:start + 3] == bytes([0, 1, 2])
    assert data[start + 64:start + 80] == np.array([1.0, 2.0]).tobytes()
    assert len(data) == start + 64 + 16


def test_anything_but_a_bundle_is_a_bad_reply() -> None:
    with pytest.raises(messages.BadReply, match="expected one fedmist.arrays array"):
        messages.unbundle(ArrayRecord({"w": Array(np.zeros(3))}))
    for data in [b"nozip", b"\x05" + b"\x00" * 7 + b"[[1]]", messages.bundle({"w": np.zeros(9)})["bundle"].data[:-8]]:
        broken = Array(dtype="uint8", shape=(len(data),), stype=messages.BUNDLE, data=data)
        with pytest.raises(messages.BadReply, match="unreadable"):
            messages.unbundle(ArrayRecord({"bundle": broken}))
    broken = Array(dtype="uint8", shape=(5,), stype=messages.NPZ, data=b"nozip")
    with pytest.raises(messages.BadReply, match="unreadable"):
        messages.unbundle(ArrayRecord({"bundle": broken}))
    with pytest.raises(TypeError, match="Python objects"):
        messages.bundle({"o": np.array([object()])})


class HandlerGrid:
    """A Grid whose nodes are the ClientApp's own handlers, called in this process: the
    federation's messages go through the real packing, handlers and validation, without a network.
    ``forget`` empties the ClientApp's held weights before every ``train.xdiff`` (a restarted
    process)."""

    def __init__(self, nodes: int, forget: bool = False) -> None:
        self.nodes, self.forget = list(range(1, nodes + 1)), forget
        self.pending: list[Message] = []
        self.sent: list[Message] = []
        self.replies: list[Message] = []

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
        self.replies += replies
        return replies


SETS = {"dataset": "synthetic:240x12x3", "model": "mlp-small", "train_size": "120", "batch_size": "20",
        "epochs": "2", "clients": "3", "lambda": "5.0", "seed": "4"}


def _train_through(grid: HandlerGrid, log: list[str], **sets: str) -> dict[str, torch.Tensor]:
    cfg = prepare_config(RunConfig.from_dict({**SETS, **sets}))
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
    # phase 1's weights stayed on the clients: the server needs only the probabilities
    train_replies = [r for r in grid.replies if r.metadata.message_type == messages.TRAIN]
    assert len(train_replies) == 3 * 2
    assert not any("weights" in r.content.array_records for r in train_replies)
    assert all("held" in r.content.config_records for r in train_replies)
    xdiff = [m for m in grid.sent if m.metadata.message_type == messages.XDIFF]
    named = Counter("weights" not in m.content.array_records for m in xdiff)
    if forget:  # every named message was answered NOT_HELD and sent again with the phase-1 job to redo
        assert named[True] == named[False] == 3 * 2, named
        assert sum("sending its phase-1 job to redo" in line for line in log) == 6, log
    else:  # no xdiff message carried weights
        assert named == Counter({True: 3 * 2}), named
        assert not any("no longer holds" in line for line in log), log
    assert not any("dropout" in line for line in log), log


def test_nan_phase1_weights_are_sent_up_not_kept_and_the_client_drops_out_in_phase1(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setenv("FEDMIST_FAULT", "nan:1:1")  # client 1's phase-1 weights become NaN in epoch 1
    client_app._HELD.clear()
    grid, log = HandlerGrid(3), []
    got = _train_through(grid, log, min_clients="2")
    dropouts = [line for line in log if line.startswith("dropout:")]
    assert len(dropouts) == 1 and "client 1" in dropouts[0] and "in train, epoch 1" in dropouts[0], log
    assert "NaN" in dropouts[0], dropouts
    assert all(torch.isfinite(v).all() for v in got.values() if v.is_floating_point())
    nan_reply = next(r for r in grid.replies if r.metadata.message_type == messages.TRAIN
                     and "weights" in r.content.array_records)  # sent up, not kept, so the server saw them
    assert int(nan_reply.content.metric_records["metrics"]["client"]) == 1
    assert not messages.all_finite({"ok": torch.zeros(2), "w": torch.tensor([0.0, float("nan")])})
    assert messages.all_finite({"ok": torch.zeros(2), "count": torch.tensor(3)})


def test_with_one_client_left_and_its_weights_on_the_client_the_epoch_keeps_the_global_model(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setenv("FEDMIST_FAULT", "error:1,2:1")  # clients 1 and 2 fail in epoch 1
    client_app._HELD.clear()
    sets = {**SETS, "epochs": "1", "min_clients": "1"}
    before = open_run(prepare_config(RunConfig.from_dict(dict(sets))), None).state
    got = _train_through(HandlerGrid(3), [], epochs="1", min_clients="1")
    assert "the global model is kept for this epoch" in capsys.readouterr().out
    for k in before:
        assert torch.equal(got[k], before[k]), k


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
