"""The two places where fedmist shortens a fixed wait inside Flower 1.42 (each can be turned off).

1. **Simulation dispatch** (``install``). Flower's simulation runtime moves messages from its
   LinkState to the ClientApp workers in a thread that polls every 0.1 s
   (``vce_api.add_messages_to_queue``). A MIST epoch is two rounds of C messages, so that sleep
   alone adds ~0.05 s per round on average (~0.1 s per epoch, ~10 % of a Location epoch here). The
   poll itself is a dictionary lookup per node, so polling every 5 ms costs nothing measurable.
   Only the simulation fedmist starts in its own process (``run_simulation``) is affected;
   ``flwr run`` and real SuperNodes keep Flower's behaviour. ``FEDMIST_DISPATCH_INTERVAL=0.1``
   restores Flower's interval.

2. **ServerApp reply pulls over the network** (``install_grid_pull_retry``). In a deployment the
   ServerApp (``flwr-serverapp``) talks to the SuperLink through ``HttpGrid``. A SuperNode sends a
   reply in two steps, the message and then its objects (the 4.6 MB of weights), and the SuperLink
   hands the message to ``pull_messages`` as soon as the first step is stored. ``HttpGrid`` then
   pulls the objects with ``pull_objects``, whose retry for an object not uploaded yet waits
   ``PULL_INITIAL_BACKOFF`` = 1 s, then 2 s, 4 s ... (``flwr.supercore.constant``), one message
   after the other: a reply polled between its two steps costs at least ~1 s (0.8-1.2 s with
   jitter) on top of its upload, which on loopback takes a fraction of that. (Measured on a
   heavily loaded 2-core VM, the round time was dominated by the object transfers themselves and
   this patch made no measurable difference; see experiments/results/location-speed.md.) The patch
   binds ``initial_backoff`` / ``backoff_cap`` of the ``pull_objects`` that ``flwr.superlink.grid.http_grid``
   calls to 20 ms / 0.5 s (the same retry the SuperNode and its ClientApp process already get in
   ``fedmist.deploy.runtime``). Every other argument, the time limit and the error handling stay
   Flower's. It is installed by the ServerApp (``fedmist.flower.server.serve``) only when its grid
   is not the in-memory one of the simulation. ``FEDMIST_GRID_PULL_RETRY=0`` keeps Flower's
   1 s, 2 s, ... retries.
"""

from __future__ import annotations

import functools
import os
import threading
from queue import Queue

DISPATCH_INTERVAL_S = float(os.environ.get("FEDMIST_DISPATCH_INTERVAL", "0.005"))
GRID_PULL_RETRY_S = float(os.environ.get("FEDMIST_GRID_PULL_RETRY", "0.02"))  # 0 = Flower's retries
GRID_PULL_RETRY_CAP_S = 0.5


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


def install_grid_pull_retry(first: float = GRID_PULL_RETRY_S, cap: float = GRID_PULL_RETRY_CAP_S) -> bool:
    """Make ``HttpGrid.pull_messages`` retry a reply's not-yet-uploaded objects after ``first``
    seconds (doubling up to ``cap``) instead of Flower's 1 s, 2 s, ...; False (and no change) when
    ``first`` is 0 or this Flower lacks the function patched. Installing twice changes nothing."""
    if first <= 0:
        return False
    try:
        from flwr.superlink.grid import http_grid
    except ImportError:
        return False
    pull = getattr(http_grid, "pull_objects", None)
    if not callable(pull):
        return False
    if getattr(pull, "fedmist_patched", False):
        return True
    patched = functools.partial(pull, initial_backoff=first, backoff_cap=cap)
    patched.fedmist_patched = True  # type: ignore[attr-defined]
    http_grid.pull_objects = patched
    return True
