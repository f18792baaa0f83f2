"""A shorter dispatch interval for Flower's in-process simulation engine.

Flower 1.42's simulation runtime moves messages from its LinkState to the ClientApp workers in a
thread that polls every 0.1 s (``vce_api.add_messages_to_queue``). A MIST epoch is two rounds of
C messages, so that sleep alone adds ~0.05 s per round on average (~0.1 s per epoch, ~10 % of a
Location epoch here). The poll itself is a dictionary lookup per node, so polling every 5 ms costs
nothing measurable. Only the simulation fedmist starts in its own process (``run_simulation``) is
affected; ``flwr run`` and real SuperNodes keep Flower's behaviour.
"""

from __future__ import annotations

import os
import threading
from queue import Queue

DISPATCH_INTERVAL_S = float(os.environ.get("FEDMIST_DISPATCH_INTERVAL", "0.005"))


def install(interval: float = DISPATCH_INTERVAL_S) -> bool:
    """Replace the dispatcher of the simulation engine; False (and no change) when this Flower
    version does not have the function it replaces."""
    try:
        from flwr.server.superlink.fleet.vce import vce_api
    except ImportError:
        return False
    if not callable(getattr(vce_api, "add_messages_to_queue", None)):
        return False

    def add_messages_to_queue(state, queue: Queue, nodes_mapping: dict, f_stop: threading.Event) -> None:
        """Same contract as Flower's: move every node's pending messages into ``queue`` until stopped."""
        while not f_stop.is_set():
            for node_id in nodes_mapping:
                for msg in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(msg)
            f_stop.wait(interval)

    vce_api.add_messages_to_queue = add_messages_to_queue
    return True
