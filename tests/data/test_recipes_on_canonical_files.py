"""The Texas100 / Purchase100 recipes run unchanged the day a user supplies the real files.

Nothing can be downloaded here, so each recipe in ``experiments/recipes/`` is run on a small file
in the canonical npz layout (the real column count, 100 classes, few rows) placed where the real
one goes. Only the length changes (1 epoch, 120 members); model, defense, optimiser and defense
parameters are the recipe's. The Location recipes run on the real file in the other tests.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmist.config import RunConfig
from fedmist.data import purchase, texas
from fedmist.runs.inprocess import InProcessFederation
from fedmist.runs.rundir import open_run, prepare_config, train_run

from tests.data.conftest import make_table

RECIPES = Path(__file__).resolve().parents[2] / "experiments" / "recipes"
SHAPES = {"texas": (texas.NPZ, 6_169), "purchase": (purchase.NPZ, 600)}
ROWS = 400


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for i, (npz, n_features) in enumerate(SHAPES.values()):
        t = make_table(ROWS, n_features, 100, seed=10 + i)
        (root / npz).parent.mkdir(parents=True, exist_ok=True)
        np.savez(root / npz, features=t.x, labels=t.y)
    return root


@pytest.mark.filterwarnings("ignore:.*not a known:UserWarning")  # a test file, not the published one
@pytest.mark.parametrize("recipe", sorted(p.name for d in SHAPES for p in RECIPES.glob(f"{d}-*.toml")))
def test_recipe_trains_on_a_file_in_the_canonical_format(recipe: str, data_dir: Path) -> None:
    torch.set_num_threads(1)
    base = RunConfig.from_toml(RECIPES / recipe)
    dataset = recipe.split("-")[0]
    assert base.dataset == dataset  # the recipe names the real dataset, not a synthetic stand-in
    cfg = prepare_config(dataclasses.replace(base, data_dir=str(data_dir), epochs=1, train_size=120,
                                             lr_schedule=[]))
    run = open_run(cfg, None)
    assert 0 < run.split.members.size <= 120  # defenses with a reference set take it out of the budget
    first = next(iter(run.state.values())).clone()
    train_run(run, InProcessFederation())
    summary = run.summary()
    assert not summary["synthetic"]  # the file was read, not generated
    assert math.isfinite(summary["test_acc"]) and 0.0 <= summary["test_acc"] <= 1.0
    assert not torch.equal(next(iter(run.state.values())), first)  # it trained
    assert run.state[next(iter(run.state))].shape[1] == SHAPES[dataset][1]  # first layer: real width
