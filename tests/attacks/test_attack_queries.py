"""Attacks that query a model: white-box gradients, label-only distance, random perturbation, CANARY."""

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

from fedmist.attacks import AttackContext, run_attacks
from fedmist.attacks.canary import make_canaries
from fedmist.attacks.label_only import QUANTILE, crossing_radius, default_radii, label_only_scores
from fedmist.attacks.queries import flip_bits, input_domain, predict_logits
from fedmist.attacks.random_perturbation import random_perturbation_scores
from fedmist.attacks.whitebox import whitebox_features, whitebox_scores
from fedmist.models.mlp import MLP


def _rng():
    return np.random.default_rng(0)


class Halfplane(nn.Module):
    """Two classes split by the hyperplane w·x = 0: logits (0, w·x)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        s = x.flatten(1) @ self.w
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_whitebox_gradient_norm_matches_autograd_loop():
    torch.manual_seed(0)
    model = MLP(5, 3, hidden=(7,)).eval()
    x = torch.randn(9, 5)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    want = []
    for xi, yi in zip(x, torch.as_tensor(y)):
        grads = torch.autograd.grad(F.cross_entropy(model(xi[None]), yi[None]), list(model.parameters()))
        want.append(-torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item())
    ctx = AttackContext(logits=predict_logits(model, x), labels=y, model=model, x=x)
    got = run_attacks(["whitebox"], ctx)["whitebox"]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    feats = whitebox_features(model, x, y)
    assert feats.shape == (9, 4 + 2 + 7)  # 4 parameter tensors, total norm, loss, 7 hidden units
    np.testing.assert_allclose(feats[:, 6:], model.net[:-1](x).detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[:, 5], F.cross_entropy(model(x), torch.as_tensor(y), reduction="none").detach(),
                               rtol=1e-5)


def test_whitebox_with_shadows_is_a_probability():
    torch.manual_seed(0)
    models = [MLP(4, 2, hidden=(3,)).eval() for _ in range(5)]
    x = torch.randn(40, 4)
    y = np.arange(40) % 2
    keep = np.argsort(_rng().random((4, 40)), axis=0) < 2
    got = whitebox_scores(models[0], x, y, _rng(), shadow_models=lambda i: models[1 + i], keep=keep, folds=2)
    assert got.shape == (40,) and ((got >= 0) & (got <= 1)).all()


def test_label_only_estimates_the_margin():
    # halfplane at margin m: a fraction Φ(−m/r) of Gaussian perturbations of size r flip the label,
    # so the fraction reaches q at r = m / Φ⁻¹(1 − q)
    model = Halfplane(torch.tensor([1.0, 0.0])).eval()
    margins = np.array([0.05, 0.2, 0.6, 1.5])
    x = torch.tensor(np.c_[np.r_[margins, -0.3, -1.0], np.zeros(6)], dtype=torch.float32)
    y = np.ones(6, dtype=np.int64)  # the last two points are misclassified
    radii = np.geomspace(0.01, 8.0, 48)
    got = label_only_scores(model, x, y, _rng(), copies=2000, radii=radii)
    np.testing.assert_allclose(got[:4], margins / norm.ppf(1 - QUANTILE), rtol=0.1)
    np.testing.assert_allclose(got[4:], -np.array([0.3, 1.0]) / norm.ppf(1 - QUANTILE), rtol=0.1)


def test_crossing_radius_interpolates():
    radii = np.array([1.0, 2.0, 4.0])
    changed = np.array([[0.0, 0.2, 0.3], [0.5, 0.9, 1.0], [0.0, 0.0, 0.05], [0.0, 0.0, 0.0]])
    got = crossing_radius(changed, radii, q=0.25, floor=0.01)
    # row 0 crosses halfway (in log r) between 2 and 4; row 1 below the first radius (linear from 0);
    # row 2 never: 4 * 0.25 / 0.05; row 3 never, at the floor: 4 * 0.25 / 0.01
    np.testing.assert_allclose(got, [2 * np.sqrt(2), 0.5, 20.0, 100.0])


def test_label_only_bit_flips_on_binary_inputs():
    # class 1 iff more than 3 of 12 bits are set; rows with more set bits need more flips
    model = Halfplane(torch.ones(12)).eval()
    model.forward = lambda x: torch.stack([torch.full((len(x),), 3.5), x.flatten(1).sum(1)], dim=1)
    x = torch.zeros(3, 12)
    x[0, :4] = 1
    x[1, :7] = 1
    x[2, :10] = 1
    got = label_only_scores(model, x, np.ones(3, dtype=np.int64), _rng(), copies=64)
    assert (np.diff(got) > 0).all()
    assert default_radii(12, True, 1.0).tolist() == [1.0, 2.0, 4.0]


def test_flip_bits_flips_exactly_k_distinct_bits():
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0]] * 3)
    out = flip_bits(x, 2, copies=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 5)
    assert ((out - x).abs().sum(-1) == 2).all() and input_domain(out).binary


def test_random_perturbation_finds_loss_minima():
    class Bowl(nn.Module):
        def forward(self, x):
            d = ((x - 1.0) ** 2).sum(1)
            return torch.stack([-d, torch.zeros_like(d)], dim=1)
    x = torch.tensor([[1.0, 1.0], [1.0, 2.0], [2.0, 1.5]])
    got = random_perturbation_scores(Bowl(), x, np.zeros(3, dtype=np.int64), _rng(), copies=400, noise_frac=0.05)
    assert got[0] > 0.99            # at the minimum every perturbation raises the loss
    assert 0.3 < got[1] < 0.7 and 0.3 < got[2] < 0.7  # on a slope about half do


def test_canaries_stay_in_the_box_and_separate_in_from_out():
    torch.manual_seed(0)
    shadows = [MLP(6, 3, hidden=(8,)).eval() for _ in range(4)]
    x = (torch.rand(10, 6) < 0.5).float()
    y = np.arange(10) % 3
    keep = np.argsort(_rng().random((4, 10)), axis=0) < 2
    can = make_canaries(shadows, keep, x, y, _rng(), n_canaries=2, steps=10, eps=0.25)
    assert can.shape == (2, 10, 6)
    assert (can >= 0).all() and (can <= 1).all() and ((can - x).abs() <= 0.25 + 1e-6).all()

    def objective(q):
        with torch.no_grad():
            ce = torch.stack([F.cross_entropy(m(q), torch.as_tensor(y), reduction="none") for m in shadows])
        k = torch.as_tensor(keep, dtype=torch.float32)
        return ((k / k.sum(0)) * ce - ((1 - k) / (1 - k).sum(0)) * ce).sum(0)
    assert (objective(can[0]) < objective(x)).float().mean() >= 0.9


def test_context_for_model_attacks_runs_everything():
    torch.manual_seed(1)
    models = [MLP(6, 3, hidden=(8,)).eval() for _ in range(5)]
    x = (torch.rand(30, 6) < 0.5).float()
    y = np.arange(30) % 3
    keep = np.argsort(_rng().random((4, 30)), axis=0) < 2
    shadow_logits = np.stack([predict_logits(m, x) for m in models[1:]])
    ctx = AttackContext(logits=predict_logits(models[0], x), labels=y, shadow_logits=shadow_logits, keep=keep,
                        model=models[0], x=x, shadow_models=lambda i: models[1 + i], seed=3)
    out = run_attacks(["canary", "label_only", "random_perturbation"], ctx)
    assert all(np.isfinite(v).all() and v.shape == (30,) for v in out.values())
    again = run_attacks(["canary", "label_only", "random_perturbation"], ctx)
    for name in out:  # seeded: the same context gives the same scores
        np.testing.assert_array_equal(out[name], again[name])


def test_whitebox_ghost_norms_equal_materialised_per_example_gradients():
    """The Linear-only fast path gives vmap(grad)'s per-tensor norms; other models use vmap."""
    from fedmist.attacks.whitebox import _linear_grad_sq_norms, _linear_layers_of_every_parameter, _vmap_grad_sq_norms

    torch.manual_seed(1)
    model = MLP(6, 4, hidden=(8, 5)).eval()
    x, y = torch.randn(11, 6), torch.randint(0, 4, (11,))
    layers = _linear_layers_of_every_parameter(model)
    assert layers is not None and [kind for _, kind in layers] == ["weight", "bias"] * 3
    fast = _linear_grad_sq_norms(model, layers)(x, y)
    slow = _vmap_grad_sq_norms(model)(x, y)
    assert fast.shape == (11, 6)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-12)
    assert _linear_layers_of_every_parameter(Halfplane(torch.ones(3))) is None  # a bare parameter
