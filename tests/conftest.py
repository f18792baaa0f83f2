"""Shared fixtures: small configs on seeded synthetic data, and where the shared data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmist.config import RunConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def tiny_cfg() -> RunConfig:
    """MIST on 240 synthetic rows with a small MLP: fast enough for many tests."""
    return RunConfig(dataset="synthetic:240x12x3", model="mlp-small", defense="mist", clients=3, epochs=2,
                     lr=0.1, momentum=0.9, batch_size=20, lam=5.0, train_size=120, seed=7)
