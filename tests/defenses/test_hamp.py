"""HAMP: soft labels and the entropy term against hand values, the rank-only output, one run."""

from __future__ import annotations

import dataclasses
import math
import warnings

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


# --- HAMP's artefact and the MIST code: γ from an entropy percentile, the loss scale, presets ----
def _label_entropy_by_hand(gamma: float, k: int) -> float:
    other = (1 - gamma) / (k - 1)
    return -(gamma * math.log(gamma) + (k - 1) * other * math.log(other))


def test_entropy_percentile_maps_to_gamma_as_the_artefact_does() -> None:
    from fedmist.defenses.hamp import gamma_for_percentile

    # K = 30, percentile 0.5: target 0.5 ln 30 = 1.70060. Stepping γ down from 1 by 0.01,
    # H(0.69) = 1.6756 is still short and H(0.68) = 1.7044 reaches it, so γ = 0.68.
    target = 0.5 * math.log(30)
    assert target == pytest.approx(1.70060, abs=1e-5)
    assert _label_entropy_by_hand(0.69, 30) < target <= _label_entropy_by_hand(0.68, 30)
    assert gamma_for_percentile(0.5, 30) == pytest.approx(0.68)
    # The MIST code's 0.1: target 0.34012; H(0.96) = 0.2938 < it <= H(0.95) = 0.3669.
    assert _label_entropy_by_hand(0.96, 30) < 0.1 * math.log(30) <= _label_entropy_by_hand(0.95, 30)
    assert gamma_for_percentile(0.1, 30) == pytest.approx(0.95)


def test_gamma_and_entropy_percentile_are_alternatives() -> None:
    from fedmist.defenses.hamp import DEFAULT_GAMMA, HAMP
    from fedmist.errors import ConfigError

    assert HAMP.parse_params({"entropy_percentile": 0.5}).gamma_for(30) == pytest.approx(0.68)
    assert HAMP.parse_params({"gamma": 0.7}).gamma_for(30) == pytest.approx(0.7)
    assert HAMP.parse_params({}).gamma_for(30) == DEFAULT_GAMMA
    with pytest.raises(ConfigError, match="not both"):
        HAMP.parse_params({"gamma": 0.7, "entropy_percentile": 0.5})
    with pytest.raises(ConfigError, match="entropy_percentile"):
        HAMP.parse_params({"entropy_percentile": 1.5})
    with pytest.raises(ConfigError, match="reduction"):
        HAMP.parse_params({"reduction": "sum"})
    with pytest.raises(ConfigError, match="random_inputs"):
        HAMP.parse_params({"random_inputs": "gaussian"})


def test_mean_reduction_is_kl_div_default_minus_the_entropy_term() -> None:
    import torch.nn.functional as F

    torch.manual_seed(1)
    logits, y = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    targets = soft_labels(y, 4, 0.7)
    # the authors' loss: F.kl_div(log_softmax, targets) (element-wise mean) - alpha * mean entropy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # kl_div warns that "mean" is not "batchmean"
        theirs = F.kl_div(torch.log_softmax(logits, 1), targets) - 0.03 * entropy(logits)
    ours = hamp_loss(logits, y, 0.7, 0.03, reduction="mean")
    const = float((targets * targets.log()).sum(1).mean()) / 4  # -H(targets)/K: no gradient
    assert float(ours) + const == pytest.approx(float(theirs), abs=1e-6)


def test_output_modification_releases_no_member_specific_confidence() -> None:
    torch.manual_seed(0)
    model = build_model("mlp-small", (8,), 5).eval()
    low, high = torch.zeros(8), torch.ones(8)
    members, others = torch.rand(16, 8).round(), torch.rand(16, 8).round()
    a = torch.softmax(HampOutput(model, low, high, seed=3)(members), 1)
    b = torch.softmax(HampOutput(model, low, high, seed=3)(others), 1)
    # The same random draws give the same released values whatever the query rows were:
    torch.testing.assert_close(torch.sort(a, 1).values, torch.sort(b, 1).values)
    # ... and each row keeps its own ranking (so its argmax) of the classes.
    for x, out in ((members, a), (others, b)):
        real = torch.softmax(model(x), 1)
        assert torch.equal(out.argmax(1), real.argmax(1))
        assert torch.equal(torch.argsort(out, dim=1, descending=True, stable=True),
                           torch.argsort(real, dim=1, descending=True, stable=True))


def test_artefact_random_inputs_are_bits() -> None:
    model = build_model("mlp-small", (6,), 3)
    low, high = torch.full((6,), 0.2), torch.full((6,), 0.4)  # the range does not matter for bits
    bits = HampOutput(model, low, high, seed=5).random_inputs(200)
    assert set(bits.unique().tolist()) == {0.0, 1.0}
    assert 0.35 < float(bits.mean()) < 0.65
    ranged = HampOutput(model, low, high, seed=5, random_inputs="range").random_inputs(200)
    assert float(ranged.min()) >= 0.2 and float(ranged.max()) <= 0.4


@pytest.mark.parametrize("name", ["location-hamp", "location-hamp-artefact", "location-hamp-mistcode",
                                  "location-hamp-artefact-om"])
def test_presets_load_and_prepare(name: str) -> None:
    from pathlib import Path

    from fedmist.cli.options import build_config
    from fedmist.defenses.hamp import HAMP

    recipe = Path(__file__).resolve().parents[2] / "fedmist" / "recipes" / f"{name}.toml"
    cfg, _ = build_config({}, [], recipe)
    cfg = prepare_config(cfg)
    p = HAMP.parse_params(cfg.params)
    assert (cfg.dataset, cfg.defense, p.reduction) == ("location", "hamp", "mean")
    if "artefact" in name:
        assert p.gamma_for(30) == pytest.approx(0.68) and p.best_validation and cfg.reference_size > 0
        assert (cfg.lr, cfg.momentum, cfg.batch_size, cfg.lr_schedule) == (0.5, 0.99, 64, [60, 90, 150])
        assert p.output_modification == name.endswith("-om")
    else:
        assert p.gamma_for(30) == pytest.approx(0.95) and not p.best_validation
        assert (cfg.lr, cfg.momentum, cfg.batch_size) == (0.1, 0.9, 100)


def test_best_validation_needs_reference_rows(tiny_cfg: RunConfig) -> None:
    from fedmist.errors import ConfigError

    cfg = dataclasses.replace(tiny_cfg, defense="hamp", params={"best_validation": True})
    with pytest.raises(ConfigError, match="reference_size"):
        prepare_config(cfg)


def test_best_validation_releases_the_best_reference_epoch(tiny_cfg: RunConfig, tmp_path) -> None:
    cfg = dataclasses.replace(tiny_cfg, defense="hamp", epochs=4, reference_size=30,
                              params={"best_validation": True, "entropy_percentile": 0.3})
    run = open_run(prepare_config(cfg), tmp_path / "run")
    assert len(run.split.reference) == 30
    train_runs([run], 1, "inprocess")
    vals = [h["val_acc"] for h in run.history]
    best = run.history[-1]["best_epoch"]
    assert vals[best - 1] == max(vals) and vals.index(max(vals)) == best - 1
    # what the run released scores the best validation accuracy on the reference rows
    loaded = load_run(tmp_path / "run")
    x = torch.from_numpy(loaded.dataset.x[run.split.reference]).float()
    y = torch.from_numpy(loaded.dataset.y[run.split.reference])
    acc = float((loaded.model(x).argmax(1) == y).float().mean())
    assert acc == pytest.approx(max(vals), abs=1e-6)
