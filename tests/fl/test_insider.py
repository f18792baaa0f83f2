"""Passive insider attacks: far above chance on a memorised partition, at chance without members."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from fedmist.attacks.insider import (combine_mean, gradient_cosine_scores, insider_scores,
                                     update_loss_delta_scores)
from fedmist.data.synthetic import make_synthetic
from fedmist.models import build_model
from fedmist.training.local import local_epoch


def _setup(rounds: int = 3, member_rows: int = 30):
    # 20 classes, 30 training rows: the client can only memorise, not generalise
    ds = make_synthetic(600, 60, 20, seed=3)
    x, y = torch.from_numpy(ds.x).float(), torch.from_numpy(ds.y)
    torch.manual_seed(0)
    model = build_model("mlp-small", ds.feature_shape, 20)
    members = np.arange(member_rows)
    snaps = []
    for r in range(rounds):  # a client memorising its tiny partition: many passes per round
        base = {k: v.clone() for k, v in model.state_dict().items()}
        rng = np.random.default_rng(r)
        for _ in range(10):
            local_epoch(model, x, y, members, lr=0.1, batch_size=8, rng=rng, momentum=0.9)
        snaps.append((base, {k: model.state_dict()[k] - base[k] for k in base}))
    return model, x, y, members, snaps


def test_update_attacks_find_a_memorised_partition_and_stay_at_chance_without_it() -> None:
    model, x, y, members, snaps = _setup()
    non_a, non_b = np.arange(100, 300), np.arange(300, 500)  # never trained on
    rows = np.concatenate([members, non_a[:100]])
    is_member = np.r_[np.ones(len(members), bool), np.zeros(100, bool)]
    ld = np.stack([update_loss_delta_scores(model, b, u, x[rows], y[rows]) for b, u in snaps])
    cs = np.stack([gradient_cosine_scores(model, b, u, x[rows], y[rows]) for b, u in snaps])
    scores = insider_scores(ld, cs, is_member, seed=0)
    for name in ("update_loss_delta_mean", "update_grad_cosine_mean", "update_both_mean", "update_stacked_lr"):
        assert roc_auc_score(is_member, scores[name]) > 0.8, name
    # non-members vs non-members: nothing to find
    rows0 = np.concatenate([non_a, non_b])
    fake = np.r_[np.ones(len(non_a), bool), np.zeros(len(non_b), bool)]
    ld0 = np.stack([update_loss_delta_scores(model, b, u, x[rows0], y[rows0]) for b, u in snaps])
    cs0 = np.stack([gradient_cosine_scores(model, b, u, x[rows0], y[rows0]) for b, u in snaps])
    for name, s in insider_scores(ld0, cs0, fake, seed=0).items():
        assert abs(roc_auc_score(fake, s) - 0.5) < 0.1, name


def test_gradient_cosine_matches_explicit_gradients() -> None:
    model, x, y, members, snaps = _setup(rounds=1, member_rows=8)
    base, upd = snaps[0]
    got = gradient_cosine_scores(model, base, upd, x[:5], y[:5])  # the one-pass linear-layer path
    slow = gradient_cosine_scores(model, base, upd, x[:5], y[:5], chunk=2, method="vmap")
    np.testing.assert_allclose(got, slow, atol=1e-5)
    model.load_state_dict(base)
    for i in range(5):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        g = torch.cat([p.grad.flatten() for _, p in model.named_parameters()])
        d = torch.cat([upd[n].flatten() for n, _ in model.named_parameters()])
        assert abs(float(torch.nn.functional.cosine_similarity(-g, d, dim=0)) - got[i]) < 1e-5


def test_combine_mean_standardises_each_round() -> None:
    a = np.array([[1.0, 2.0, 3.0], [100.0, 300.0, 200.0]])
    z = combine_mean(a)
    np.testing.assert_allclose(z, (np.array([-1.2247, 0.0, 1.2247]) + np.array([-1.2247, 1.2247, 0.0])) / 2, atol=1e-4)
