"""Training math against hand-computed values (no Flower)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedmist.data.split import make_split, partition
from fedmist.training import average_states, true_class_probs, xdiff_loss, xdiff_targets
from fedmist.training.local import local_epoch
from fedmist.training.xdiff import xdiff_epoch


def test_xdiff_loss_l1_l2_kl_by_hand() -> None:
    p = torch.tensor([0.9, 0.2, 0.5])
    t = torch.tensor([0.6, 0.4, 0.5])
    assert xdiff_loss(p, t, "l1").item() == pytest.approx((0.3 + 0.2 + 0.0) / 3)
    assert xdiff_loss(p, t, "l2").item() == pytest.approx((0.09 + 0.04 + 0.0) / 3)
    kl = [ti * math.log(ti / pi) + (1 - ti) * math.log((1 - ti) / (1 - pi)) for pi, ti in zip(p.tolist(), t.tolist())]
    assert xdiff_loss(p, t, "kl").item() == pytest.approx(sum(kl) / 3, rel=1e-5)
    with pytest.raises(ValueError):
        xdiff_loss(p, t, "huber")


def test_xdiff_loss_gradient_pulls_towards_target() -> None:
    p = torch.tensor([0.9, 0.1], requires_grad=True)
    xdiff_loss(p, torch.tensor([0.5, 0.5]), "l1").backward()
    assert p.grad.tolist() == pytest.approx([0.5, -0.5])  # sign(p - t) / n


def test_targets_are_mean_of_other_clients() -> None:
    # 3 clients, 4 examples; example j is owned by owner[j]; its target averages the two others.
    probs = np.array([[0.1, 0.2, 0.3, 0.4],
                      [0.5, 0.6, 0.7, 0.8],
                      [0.9, 1.0, 0.0, 0.2]], dtype=np.float32)
    owner = np.array([0, 1, 2, 0])
    expected = [(0.5 + 0.9) / 2, (0.2 + 1.0) / 2, (0.3 + 0.7) / 2, (0.8 + 0.2) / 2]
    assert xdiff_targets(probs, owner).tolist() == pytest.approx(expected)
    probs[0, 0] = np.nan  # an owner's own entry is never read
    assert xdiff_targets(probs, owner)[0] == pytest.approx(0.7)


def test_true_class_probs_of_a_known_linear_model() -> None:
    model = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 2])
    e = math.e
    expected = [e / (e + 1 + 1), 1 / (1 + e**2 + 1)]
    got = true_class_probs(model, x, y, np.array([0, 1]))
    assert got.tolist() == pytest.approx(expected, rel=1e-6)


def test_average_states_is_elementwise_mean_and_keeps_int_buffers() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    c = {"w": torch.tensor([5.0, 1.0]), "n": torch.tensor(7)}
    avg = average_states([a, b, c])
    assert avg["w"].tolist() == pytest.approx([3.0, 3.0])
    assert avg["n"].item() == 3
    assert average_states([a, b], weights=[0.25, 0.75])["w"].tolist() == pytest.approx([2.5, 5.0])
    with pytest.raises(ValueError):
        average_states([a, {"v": torch.zeros(2), "n": torch.tensor(1)}])


@pytest.mark.parametrize("mode", ["epoch", "fixed"])
def test_partition_is_a_disjoint_near_equal_cover(mode: str) -> None:
    members = np.random.default_rng(0).permutation(1000)[:403]
    for epoch in (1, 2, 3):
        parts = partition(members, 4, seed=3, epoch=epoch, repartition=mode)
        joined = np.concatenate(parts)
        assert sorted(joined.tolist()) == sorted(members.tolist())  # a permutation of the members
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    p1 = partition(members, 4, 3, 1, mode)
    p2 = partition(members, 4, 3, 2, mode)
    same = all(np.array_equal(a, b) for a, b in zip(p1, p2))
    assert same == (mode == "fixed")
    assert all(np.array_equal(a, b) for a, b in zip(p1, partition(members, 4, 3, 1, mode)))  # seeded


def test_split_roles_are_disjoint_and_location_shaped() -> None:
    s = make_split(5010, 4000, seed=0)
    assert (len(s.members), len(s.nonmembers)) == (4000, 1010)
    assert s.test_is_nonmembers and np.array_equal(s.test, s.nonmembers)
    assert not set(s.members) & set(s.nonmembers)
    big = make_split(197324, 40000, seed=0)
    assert len(big.nonmembers) == 40000 and not big.test_is_nonmembers
    assert not (set(big.test) & set(big.members)) and not (set(big.test) & set(big.nonmembers))


def _toy(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.randn(60, 5)
    y = (x[:, 0] > 0).long()
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)), x, y


def test_local_epoch_reduces_loss_and_is_deterministic() -> None:
    model, x, y = _toy()
    rows = np.arange(60)
    first = local_epoch(model, x, y, rows, lr=0.5, batch_size=10, rng=np.random.default_rng(1))
    for _ in range(5):
        last = local_epoch(model, x, y, rows, lr=0.5, batch_size=10, rng=np.random.default_rng(1))
    assert last < first
    m1, _, _ = _toy()
    m2, _, _ = _toy()
    for m in (m1, m2):
        local_epoch(m, x, y, rows, lr=0.5, batch_size=10, rng=np.random.default_rng(5), mixup_alpha=1.0)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_xdiff_epoch_moves_true_class_probability_towards_target() -> None:
    model, x, y = _toy()
    rows = np.arange(30)
    local_epoch(model, x, y, rows, lr=0.5, batch_size=10, rng=np.random.default_rng(0))
    before = true_class_probs(model, x, y, rows)
    targets = np.clip(before - 0.3, 0.05, 1.0).astype(np.float32)  # peers are less confident
    for _ in range(3):
        xdiff_epoch(model, x, y, rows, targets, lam=5.0, lr=0.5, batch_size=10, rng=np.random.default_rng(0))
    after = true_class_probs(model, x, y, rows)
    assert np.abs(after - targets).mean() < np.abs(before - targets).mean()
