"""The simulation's shorter dispatch interval keeps Flower's dispatcher contract."""

from __future__ import annotations

import threading
from queue import Queue

from flwr.server.superlink.fleet.vce import vce_api

from fedmist.flower import dispatch


class _State:
    """Pending messages per node, handed out one per call like Flower's LinkState(limit=1)."""

    def __init__(self, pending: dict[int, list[str]]) -> None:
        self.pending = pending

    def get_message_ins(self, node_id: int, limit: int) -> list[str]:
        out, self.pending[node_id] = self.pending[node_id][:limit], self.pending[node_id][limit:]
        return out


def test_dispatcher_moves_every_pending_message_and_stops(monkeypatch) -> None:
    original = vce_api.add_messages_to_queue
    monkeypatch.setattr(vce_api, "add_messages_to_queue", original)  # restored after the test
    assert dispatch.install(0.005)
    assert vce_api.add_messages_to_queue is not original
    state = _State({7: ["a", "b", "c"], 9: ["d"]})
    queue: Queue = Queue()
    stop = threading.Event()
    th = threading.Thread(target=vce_api.add_messages_to_queue, args=(state, queue, {7: 0, 9: 1}, stop))
    th.start()
    got = [queue.get(timeout=2) for _ in range(4)]
    stop.set()
    th.join(timeout=2)
    assert sorted(got) == ["a", "b", "c", "d"]
    assert got.index("a") < got.index("b") < got.index("c")  # a node's messages keep their order
    assert not th.is_alive()
