"""The ServerApp's reply pulls retry a not-yet-uploaded object after 20 ms, not Flower's 1 s
(fedmist.flower.dispatch.install_grid_pull_retry); FEDMIST_GRID_PULL_RETRY=0 keeps Flower's."""

from __future__ import annotations

import time

import pytest
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError
from flwr.superlink.grid import http_grid

from fedmist.flower import dispatch


@pytest.fixture
def restore_pull(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(http_grid, "pull_objects", http_grid.pull_objects)  # undone after the test


def _late_object(ready_after: int):
    """A pull function whose object is unavailable for the first ``ready_after`` tries."""
    calls = {"n": 0}

    def pull(object_id: str) -> bytes:
        calls["n"] += 1
        if calls["n"] <= ready_after:
            raise ObjectUnavailableError(object_id)
        return b"content"
    return pull, calls


def test_patched_pull_retries_after_milliseconds(restore_pull) -> None:
    original = http_grid.pull_objects
    assert dispatch.install_grid_pull_retry(0.02, 0.5)
    assert dispatch.install_grid_pull_retry(0.02, 0.5)  # twice: no second wrapper
    assert http_grid.pull_objects.func is original  # type: ignore[attr-defined]
    pull, calls = _late_object(ready_after=2)
    t0 = time.perf_counter()
    got = http_grid.pull_objects(["a" * 64], pull)
    assert got == {"a" * 64: b"content"} and calls["n"] == 3
    assert time.perf_counter() - t0 < 0.5  # Flower's default: 1 s + 2 s (±20 %)


def test_zero_keeps_flowers_retries(restore_pull) -> None:
    original = http_grid.pull_objects
    assert not dispatch.install_grid_pull_retry(0)
    assert http_grid.pull_objects is original


def test_polls_stay_short_while_a_run_is_active(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedmist.deploy import runtime

    clock = {"t": 1000.0}
    monkeypatch.setattr(runtime.time, "monotonic", lambda: clock["t"])
    b = runtime.Backoff(0.02, 3.0, active_cap=0.5, active_window=60.0)
    idle = [b.next() for _ in range(20)]
    assert idle[0] == 0.02 and idle[-1] == 3.0  # never active: Flower's 3 s cap
    b.reset()
    active = [b.next() for _ in range(20)]
    assert active[0] == 0.02 and max(active) == 0.5  # a message just came: at most 0.5 s
    clock["t"] += 61.0
    assert b.next() == 3.0  # a minute without messages: back to the idle cap
