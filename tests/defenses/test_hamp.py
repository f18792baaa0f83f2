"""HAMP: soft labels and the entropy term against hand values, the rank-only output, one run."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from fedmist.config import RunConfig
from fedmist.defenses.hamp import HIGH, LOW, HampOutput, entropy, hamp_loss, modified_model, reorder_like, soft_labels
from fedmist.runs.load import load_run
from fedmist.models import build_model
from fedmist.runs.rundir import open_run, prepare_config
from fedmist.flower.simulation import train_runs


def test_soft_labels_put_gamma_on_the_true_class_and_share_the_rest() -> None:
    got = soft_labels(torch.tensor([1, 3]), 5, 0.6)
    expected = torch.tensor([[0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.6, 0.1]])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(1), torch.ones(2))


def test_entropy_and_loss_against_hand_values() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]))
    h1, h2 = -(0.5 * math.log(0.5) + 0.5 * math.log(0.25)), math.log(3)  # 1.0397, 1.0986
    assert float(entropy(logits)) == pytest.approx((h1 + h2) / 2, abs=1e-6)
    # soft labels for y = (0, 1), γ = 0.8: (0.8, 0.1, 0.1) and (0.1, 0.8, 0.1)
    ce1 = -(0.8 * math.log(0.5) + 0.2 * math.log(0.25))
    ce2 = math.log(3)
    got = hamp_loss(logits, torch.tensor([0, 1]), gamma=0.8, entropy_weight=0.5)
    assert float(got) == pytest.approx((ce1 + ce2) / 2 - 0.5 * (h1 + h2) / 2, abs=1e-6)


def test_reorder_keeps_the_real_ranking_and_the_random_values() -> None:
    real = torch.tensor([[0.1, 2.0, -1.0, 0.5]])
    rand = torch.tensor([[0.75, 0.0625, 0.125, 0.0625]])
    # real ranks the classes 1, 3, 0, 2: they get 0.75, 0.125, 0.0625, 0.0625
    assert reorder_like(real, rand).tolist() == [[0.0625, 0.75, 0.0625, 0.125]]


def test_output_modification_releases_a_permutation_of_a_random_input_prediction() -> None:
    torch.manual_seed(0)
    model = build_model("mlp-small", (6,), 4).eval()
    low, high = torch.zeros(6), torch.full((6,), 2.0)
    wrapped = HampOutput(model, low, high, seed=11)
    x = torch.rand(32, 6) * 2
    released = torch.softmax(wrapped(x), dim=1)
    real = torch.softmax(model(x), dim=1)
    # The random inputs the wrapper drew: the same seed draws them again, in the data's range.
    rand_x = HampOutput(model, low, high, seed=11).random_inputs(32)
    assert float(rand_x.min()) >= 0 and float(rand_x.max()) <= 2
    rand = torch.softmax(model(rand_x), dim=1)
    assert torch.equal(released.argmax(1), real.argmax(1))
    assert torch.equal(torch.argsort(released, dim=1, descending=True, stable=True),
                       torch.argsort(real, dim=1, descending=True, stable=True))
    torch.testing.assert_close(torch.sort(released, 1).values, torch.sort(rand, 1).values)
    assert not torch.allclose(released, real)


def test_query_model_is_the_plain_network_unless_asked(tiny_cfg: RunConfig) -> None:
    model = build_model("mlp-small", (12,), 3)
    state = {LOW: torch.zeros(12), HIGH: torch.ones(12)}
    cfg = dataclasses.replace(tiny_cfg, defense="hamp")
    assert modified_model(model, state, cfg) is model
    on = dataclasses.replace(cfg, params={"output_modification": True})
    assert isinstance(modified_model(model, state, on), HampOutput)
    with pytest.raises(ValueError, match="feature range"):
        modified_model(model, {}, on)


def test_end_to_end_in_process_and_loaded_with_output_modification(tiny_cfg: RunConfig, tmp_path) -> None:
    cfg = dataclasses.replace(tiny_cfg, defense="hamp", params={"output_modification": True})
    run = open_run(prepare_config(cfg), tmp_path / "run")
    assert run.cfg.clients == 1 and len(run.split.reference) == 0
    train_runs([run], 1, "inprocess")
    assert all(np.isfinite(h["local_loss"]) for h in run.history)
    loaded = load_run(tmp_path / "run")
    assert isinstance(loaded.model, HampOutput)
    x = torch.from_numpy(loaded.dataset.x[loaded.split["test"]]).float()
    out = loaded.model(x)
    torch.testing.assert_close(torch.logsumexp(out, 1), torch.zeros(len(x)), atol=1e-5, rtol=0)
    assert torch.equal(out.argmax(1), loaded.model.model(x).argmax(1))
