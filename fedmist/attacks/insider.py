"""Insider membership inference on federated updates: tensors in, scores out (higher = member).

An insider sees, per round, a model θ the round started from and an *update* Δ that some party's
training produced from it (the server: each client's upload; a participant: the others'
aggregate m·θ_R − θ_own, or the peers' forwarded phase-1 weights under private-data MIST).
Two per-example signals per round (Li et al., ICLR 2023; Nasr et al. 2019; Hu et al.'s survey §5.2):

- ``update_loss_delta_scores``: ℓ(x; θ) − ℓ(x; θ + Δ). Training on x lowers x's loss.
- ``gradient_cosine_scores``: cos(−∇_θ ℓ(x; θ), Δ). An update made of x's gradient points along it.

and two ways to combine the rounds (both named in the survey):

- ``combine_mean``: one attack per snapshot, each standardised over the audited examples (no
  labels used), averaged over rounds;
- ``combine_stacked``: one attack over the concatenated per-round signals: a logistic regression,
  cross-fitted (``fedmist.attacks.crossfit``), so every example is scored by a classifier trained
  on *other* examples' labels. This assumes the attacker knows the membership of some candidates
  (here: the other folds), as a supervised attack must.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

Arrays = Mapping[str, np.ndarray | torch.Tensor]


def _tensors(state: Arrays) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v).to(torch.float32)
            if (v.dtype.kind == "f" if isinstance(v, np.ndarray) else v.is_floating_point())
            else torch.as_tensor(v) for k, v in state.items()}


def add_update(base: Arrays, update: Arrays, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """θ + scale·Δ on the floating-point entries (integer buffers taken from ``base``)."""
    b, u = _tensors(base), _tensors(update)
    return {k: (v + scale * u[k]) if v.is_floating_point() else v for k, v in b.items()}


@torch.no_grad()
def per_example_loss(model: nn.Module, state: Arrays, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> np.ndarray:
    """Cross-entropy of every example under ``state`` loaded into ``model``'s architecture."""
    params = _tensors(state)
    model.eval()
    out = [F.cross_entropy(functional_call(model, params, (x[i:i + batch],)), y[i:i + batch], reduction="none")
           for i in range(0, len(y), batch)]
    return torch.cat(out).double().numpy()


def update_loss_delta_scores(model: nn.Module, base: Arrays, update: Arrays, x: torch.Tensor,
                             y: torch.Tensor) -> np.ndarray:
    """ℓ(x; θ) − ℓ(x; θ + Δ) per example: how much the update lowered x's loss."""
    return per_example_loss(model, base, x, y) - per_example_loss(model, add_update(base, update), x, y)


def gradient_cosine_scores(model: nn.Module, base: Arrays, update: Arrays, x: torch.Tensor, y: torch.Tensor,
                           chunk: int = 32, method: str = "auto") -> np.ndarray:
    """cos(−∇_θ ℓ(x; θ), Δ) per example over all trainable parameters.

    ``method="linear"`` (chosen by ``"auto"`` when every parametrised layer is an ``nn.Linear``,
    e.g. the tabular MLPs): exact per-example dot products and norms from one forward/backward
    pass per batch, without materialising per-example gradients: a linear layer's per-example
    weight gradient is the outer product b_i a_iᵀ of its output gradient and input, so
    g_i·ΔW = b_iᵀ ΔW a_i and |g_i|² = |a_i|²|b_i|² (+ |b_i|² for the bias). ``"vmap"``: per-example
    gradients with ``torch.func.vmap``, ``chunk`` examples at a time (any architecture; on
    Location's 1.15 M-weight MLP about 100x slower)."""
    if method == "auto":
        method = "linear" if _all_linear(model) else "vmap"
    if method == "linear":
        return _linear_cosines(model, base, update, x, y)
    state = _tensors(base)
    upd = _tensors(update)
    names = [n for n, _ in model.named_parameters()]
    params = {n: state[n] for n in names}
    buffers = {k: v for k, v in state.items() if k not in params}
    delta = {n: upd[n] for n in names}
    dnorm = torch.sqrt(sum((d.double() ** 2).sum() for d in delta.values()))
    model.eval()

    def loss_of(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**p, **buffers}, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_grad = vmap(grad(loss_of), in_dims=(None, 0, 0))
    out = np.empty(len(y), dtype=np.float64)
    for i in range(0, len(y), chunk):
        g = per_grad(params, x[i:i + chunk], y[i:i + chunk])
        dot = sum((g[n].flatten(1).double() * delta[n].flatten().double()).sum(1) for n in names)
        gnorm = torch.sqrt(sum((g[n].flatten(1).double() ** 2).sum(1) for n in names))
        out[i:i + chunk] = (-dot / (gnorm * dnorm).clamp_min(1e-30)).numpy()
    return out


def _all_linear(model: nn.Module) -> bool:
    leaves = [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    return bool(leaves) and all(isinstance(m, nn.Linear) for m in leaves)


class LinearGradStats:
    """Per-example inputs a and output gradients b of every ``nn.Linear`` at one model θ, and the
    per-example losses there: enough to get g_i·Δ and |g_i| for *any* update Δ without another
    backward pass (the server scores every client's update from the same θ_{R-1})."""

    def __init__(self, model: nn.Module, base: Arrays, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> None:
        import copy

        net = copy.deepcopy(model)
        net.load_state_dict(_tensors(base))
        net.eval()
        names = {m: n for n, m in net.named_modules() if isinstance(m, nn.Linear)}
        acts: dict[nn.Module, torch.Tensor] = {}
        outs: dict[nn.Module, torch.Tensor] = {}

        def keep(mod, inp, out):
            acts[mod] = inp[0].detach()
            outs[mod] = out
        hooks = [m.register_forward_hook(keep) for m in names]
        a_parts: dict[str, list] = {n: [] for n in names.values()}
        b_parts: dict[str, list] = {n: [] for n in names.values()}
        losses = []
        try:
            for i in range(0, len(y), batch):
                acts.clear()
                outs.clear()
                per = F.cross_entropy(net(x[i:i + batch]), y[i:i + batch], reduction="none")
                mods = list(outs)
                grads = torch.autograd.grad(per.sum(), [outs[m] for m in mods])  # per-example output gradients
                for m, b in zip(mods, grads):
                    a_parts[names[m]].append(acts[m])
                    b_parts[names[m]].append(b.detach())
                losses.append(per.detach().double())
        finally:
            for h in hooks:
                h.remove()
        self.layers = [(n, torch.cat(a_parts[n]), torch.cat(b_parts[n]), m.bias is not None) for m, n in names.items()]
        self.loss = torch.cat(losses).numpy()
        self.sq = sum(((a.double() ** 2).sum(1) + 1.0 * has_b) * (b.double() ** 2).sum(1)
                      for _, a, b, has_b in self.layers).sqrt()

    def cosines(self, update: Arrays, idx: np.ndarray | None = None) -> np.ndarray:
        """cos(−g_i, Δ) for the examples ``idx`` (all by default)."""
        upd = _tensors(update)
        sel = slice(None) if idx is None else torch.from_numpy(np.asarray(idx, dtype=np.int64))
        dnorm = torch.sqrt(sum((upd[f"{n}.weight"].double() ** 2).sum() + ((upd[f"{n}.bias"].double() ** 2).sum()
                                                                           if hb else 0.0)
                               for n, _, _, hb in self.layers))
        dot = 0.0
        for n, a, b, has_b in self.layers:
            a, b = a[sel], b[sel]
            dot = dot + ((b @ upd[f"{n}.weight"]) * a).double().sum(1)
            if has_b:
                dot = dot + (b @ upd[f"{n}.bias"]).double()
        return (-dot / (self.sq[sel] * dnorm).clamp_min(1e-30)).numpy()


def _linear_cosines(model: nn.Module, base: Arrays, update: Arrays, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return LinearGradStats(model, base, x, y).cosines(update)


def snapshot_signals(model: nn.Module, base: Arrays, updates: Mapping[int, Arrays], x: torch.Tensor, y: torch.Tensor,
                     groups: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Loss deltas and gradient cosines of every example in one round where several parties'
    updates start from the same θ: example ``groups[k]`` (positions into x) is scored with
    ``updates[k]``; examples in no group get NaN. Linear models share one backward pass at θ."""
    ld = np.full(len(y), np.nan)
    cs = np.full(len(y), np.nan)
    stats = LinearGradStats(model, base, x, y) if _all_linear(model) else None
    for k, pos in groups.items():
        if len(pos) == 0 or k not in updates:
            continue
        pos = np.asarray(pos, dtype=np.int64)
        t = torch.from_numpy(pos)
        after = per_example_loss(model, add_update(base, updates[k]), x[t], y[t])
        if stats is not None:
            ld[pos] = stats.loss[pos] - after
            cs[pos] = stats.cosines(updates[k], pos)
        else:
            ld[pos] = per_example_loss(model, base, x[t], y[t]) - after
            cs[pos] = gradient_cosine_scores(model, base, updates[k], x[t], y[t])
    return ld, cs


def standardise(scores: np.ndarray) -> np.ndarray:
    """(x − mean) / std over the audited examples (unsupervised; a constant signal becomes 0)."""
    s = np.asarray(scores, dtype=np.float64)
    sd = s.std()
    return (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)


def combine_mean(per_round: np.ndarray) -> np.ndarray:
    """(R, n) per-round scores -> (n,): each round standardised, then averaged (rounds where an
    example has no score, NaN, are left out of its mean)."""
    per_round = np.atleast_2d(np.asarray(per_round, dtype=np.float64))
    z = np.full_like(per_round, np.nan)
    for r, row in enumerate(per_round):
        ok = np.isfinite(row)
        if ok.any():
            z[r, ok] = standardise(row[ok])
    counts = np.isfinite(z).sum(0)
    return np.where(counts > 0, np.nansum(z, 0) / np.maximum(counts, 1), 0.0)


def combine_stacked(features: np.ndarray, is_member: np.ndarray, seed: int = 0, folds: int = 5) -> np.ndarray:
    """(n, F) concatenated per-round signals -> (n,) cross-fitted P(member) of a logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fedmist.attacks.crossfit import crossfit_scores

    feats = np.nan_to_num(np.asarray(features, dtype=np.float64))
    member = np.asarray(is_member, dtype=bool)
    return crossfit_scores(feats[None], member[None], feats,
                           lambda: make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)),
                           np.random.default_rng([seed, 0x57AC]), folds=folds, max_rows=None)


def insider_scores(loss_deltas: np.ndarray, cosines: np.ndarray, is_member: np.ndarray, seed: int = 0,
                   prefix: str = "update") -> dict[str, np.ndarray]:
    """The four insider attacks from (R, n) per-round loss deltas and cosines."""
    ld, cs = np.atleast_2d(loss_deltas), np.atleast_2d(cosines)
    feats = np.concatenate([ld.T, cs.T], axis=1)
    return {
        f"{prefix}_loss_delta_mean": combine_mean(ld),
        f"{prefix}_grad_cosine_mean": combine_mean(cs),
        f"{prefix}_both_mean": combine_mean(np.concatenate([ld, cs])),
        f"{prefix}_stacked_lr": combine_stacked(feats, is_member, seed),
    }
