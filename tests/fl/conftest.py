"""Tiny FL configs on seeded synthetic data."""

from __future__ import annotations

import pytest

from fedmist.config import RunConfig


@pytest.fixture
def fl_cfg() -> RunConfig:
    return RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="sgd", clients=3, epochs=2, lr=0.1,
                     momentum=0.9, batch_size=20, lam=5.0, train_size=120, seed=7, mode="fl")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread: on this 2-core machine under load, two threads made tiny models ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
