"""MemGuard (Jia et al., CCS 2019): perturb the released confidence vectors, not the training.

The target trains like ``sgd``. After training, the defender fits its own membership classifier g
(MemGuard's "defense model": an MLP on the sorted confidence vector) on the model's outputs for
members (1) and held-out reference rows (0). Every query is then answered in two phases:

- Phase I: find noise on the logits, by normalised gradient steps on
  ``c1·|g_logit| + c2·relu(max_wrong − z_label) + c3·‖softmax(z') − s‖₁``, that moves g's output
  across 0.5 while the predicted label stays; c3 grows ×10 while the search still succeeds, so
  the smallest distortion found is kept (the authors' ``defense_framework.py``).
- Phase II: release the noisy vector with probability ``min(ε / ‖s' − s‖₁, 1)`` (0 if the noise
  does not bring g closer to 0.5), so the expected L1 distortion stays within the budget ε.

The coin of Phase II is a hash of the query's input, so asking the same question twice gets the
same answer (averaging repeated queries does not remove the noise) and the answers do not depend
on how queries are batched.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmist.config import RunConfig
from fedmist.defenses.registry import AUX, DefenseSpec, Knob, model_part, register_defense
from fedmist.errors import ConfigError, RunDirError
from fedmist.training.evaluate import class_probs
from fedmist.training.workspace import get_workspace

PREFIX = AUX + "memguard/"  # g's weights in the run's state (saved to defense.pt)


@dataclass(frozen=True)
class MemGuardParams:
    """MemGuard's knobs; defaults from the authors' code (github.com/jinyuan-jia/MemGuard).

    ``epsilon``: the L1 distortion budget of Phase II; 1.0 is the largest budget the authors
    evaluate (``evaluate_nn_attack.py``), where their NN attack is at chance on Location.
    ``max_iter``, ``step_size``, ``c1``..``c3``, ``c3_max``: Phase I (``defense_framework.py``:
    300, 0.1, 1, 10, 0.1, 1e5). ``defender_*``: g's training (the authors: 400 epochs, batch 64,
    Keras SGD at lr 0.001; we use Adam at the same lr, as plain SGD that slow barely moves g on
    the few hundred reference rows of a Location run).
    """

    epsilon: float = 1.0
    max_iter: int = 300
    step_size: float = 0.1
    c1: float = 1.0
    c2: float = 10.0
    c3: float = 0.1
    c3_max: float = 1e5
    defender_epochs: int = 400
    defender_batch_size: int = 64
    defender_lr: float = 1e-3

    def check(self) -> None:
        if not self.epsilon >= 0:
            raise ConfigError(f"memguard: epsilon (L1 distortion budget) must be >= 0, got {self.epsilon}")
        if self.max_iter < 1 or self.defender_epochs < 1 or self.defender_batch_size < 1:
            raise ConfigError("memguard: max_iter, defender_epochs and defender_batch_size must be >= 1")
        if not (self.step_size > 0 and self.c1 > 0 and self.c2 > 0 and self.c3 > 0 and self.defender_lr > 0):
            raise ConfigError("memguard: step_size, c1, c2, c3 and defender_lr must be positive")
        if not self.c3_max >= self.c3:
            raise ConfigError(f"memguard: c3_max must be >= c3, got {self.c3_max} < {self.c3}")


class MembershipNet(nn.Module):
    """The defender's membership classifier: sorted confidence vector -> member logit."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_classes, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                 nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return self.net(probs.sort(dim=1).values).squeeze(1)


# --- after training: the defender's classifier -----------------------------------------------
def fit_defender(probs: np.ndarray, member: np.ndarray, p: MemGuardParams, seed: int) -> tuple[MembershipNet, float]:
    """Train g on confidence vectors ``probs`` (N, K) with labels ``member`` (N,); returns g and
    its training accuracy."""
    torch.manual_seed(seed)
    g = MembershipNet(probs.shape[1])
    x = torch.from_numpy(np.asarray(probs, np.float32))
    y = torch.from_numpy(np.asarray(member, np.float32))
    opt = torch.optim.Adam(g.parameters(), lr=p.defender_lr)
    rng = np.random.default_rng(seed)
    for _ in range(p.defender_epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), p.defender_batch_size):
            idx = order[start:start + p.defender_batch_size]
            loss = F.binary_cross_entropy_with_logits(g(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    g.eval()
    with torch.no_grad():
        acc = float(((g(x) > 0).float() == y).float().mean())
    return g, acc


def train_defender(run) -> dict:
    """``after_training``: fit g on members (a sample as large as the reference set) vs the
    reference rows and keep its weights in the run's state under ``aux/memguard/``."""

    cfg, split = run.cfg, run.split
    if len(split.reference) == 0:
        raise ConfigError("memguard needs reference rows (non-members the defender may use); set reference_size > 0")
    p: MemGuardParams = MEMGUARD.parse_params(cfg.params)
    rng = np.random.default_rng([cfg.seed, 0x4D47])
    members = rng.choice(split.members, size=min(len(split.members), len(split.reference)), replace=False)
    ws = get_workspace(cfg)
    ws.model.load_state_dict(model_part(run.state))
    probs = class_probs(ws.model, ws.x, np.concatenate([members, split.reference]), ws.device)
    labels = np.r_[np.ones(len(members)), np.zeros(len(split.reference))]
    g, acc = fit_defender(probs, labels, p, seed=cfg.seed)
    run.state = {**run.state, **{PREFIX + k: v.detach().cpu().clone() for k, v in g.state_dict().items()}}
    return {"defender_train_acc": acc, "defender_members": int(len(members)),
            "defender_nonmembers": int(len(split.reference)), "l1_budget": p.epsilon}


# --- query time: Phases I and II --------------------------------------------------------------
@dataclass
class Guarded:
    """One batch through MemGuard: Phase I's noisy logits and Phase II's coin per example."""

    clean: torch.Tensor  # (B, K) the model's logits
    noisy: torch.Tensor  # (B, K) Phase I's logits (= clean where no noise was found)
    p_release: torch.Tensor  # (B,) probability that the noisy vector is released
    released: torch.Tensor  # (B,) bool: this query's coin

    @property
    def logits(self) -> torch.Tensor:
        return torch.where(self.released[:, None], self.noisy, self.clean)


def _phase1_loss(z: torch.Tensor, s0: torch.Tensor, label: torch.Tensor, g: nn.Module, p: MemGuardParams,
                 c3: float) -> torch.Tensor:
    s = torch.softmax(z, dim=1)
    correct = z.gather(1, label[:, None]).squeeze(1)
    wrong = z.scatter(1, label[:, None], float("-inf")).max(dim=1).values
    return p.c1 * g(s).abs() + p.c2 * F.relu(wrong - correct) + c3 * (s - s0).abs().sum(1)


def _descend(z0: torch.Tensor, label: torch.Tensor, side: torch.Tensor, g: nn.Module, p: MemGuardParams,
             c3: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised gradient steps from ``z0`` until g's logit changes sign (``side`` is its clean
    sign) with the label kept, per row; returns the logits and which rows got there."""
    s0 = torch.softmax(z0, dim=1)
    z, done = z0.clone(), torch.zeros(len(z0), dtype=torch.bool, device=z0.device)
    for _ in range(p.max_iter - 1):  # the authors' loop: j = 1 .. max_iter - 1
        todo = (~done).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        zt = z[todo].requires_grad_(True)
        grad, = torch.autograd.grad(_phase1_loss(zt, s0[todo], label[todo], g, p, c3).sum(), zt)
        zt = zt.detach() - p.step_size * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        z[todo] = zt
        crossed = g(torch.softmax(zt, dim=1)) * side[todo] <= 0
        done[todo] = crossed & (zt.argmax(dim=1) == label[todo])
    return z, done


def find_noise(logits: torch.Tensor, g: nn.Module, p: MemGuardParams) -> torch.Tensor:
    """Phase I for a batch of logits: the perturbed logits (the clean ones where none is found)."""
    z0 = logits.detach().float()
    label = z0.argmax(dim=1)
    with torch.enable_grad():
        h0 = g(torch.softmax(z0, dim=1)).detach()
        result = z0.clone()
        active = (torch.sigmoid(h0) - 0.5).abs() > 1e-5  # already at 0.5: nothing to do
        c3 = p.c3
        while active.any() and c3 <= p.c3_max:
            rows = active.nonzero().squeeze(1)
            z, ok = _descend(z0[rows], label[rows], torch.sign(h0[rows]), g, p, c3)
            result[rows[ok]] = z[ok]  # a larger c3 that still succeeds gives less distortion
            active[rows[~ok]] = False
            c3 *= 10
    return result


def release_probability(clean: torch.Tensor, noisy: torch.Tensor, g: nn.Module, epsilon: float) -> torch.Tensor:
    """Phase II: min(ε / ‖s' − s‖₁, 1) where the noise brings g closer to 0.5, else 0."""
    s, s_noisy = torch.softmax(clean, dim=1), torch.softmax(noisy, dim=1)
    distortion = (s_noisy - s).abs().sum(1)
    helps = (torch.sigmoid(g(s_noisy)) - 0.5).abs() < (torch.sigmoid(g(s)) - 0.5).abs()
    ratio = (epsilon / distortion.clamp_min(1e-12)).clamp(max=1.0)
    return torch.where(helps & (distortion > 0), ratio, torch.zeros_like(ratio))


def query_coins(x: torch.Tensor) -> torch.Tensor:
    """A uniform number in [0, 1) per row of ``x``, a hash of its values: fixed per question."""
    rows = x.detach().flatten(1).to("cpu", torch.float32).contiguous().numpy()
    coins = [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8, key=b"memguard").digest(), "little") / 2.0**64
             for r in rows]
    return torch.tensor(coins, dtype=torch.float64, device=x.device)


class MemGuardModel(nn.Module):
    """The deployed model: ``forward(x)`` returns log-probabilities whose softmax is MemGuard's
    released confidence vector (same argmax as the model). Gradients flow as through the clean
    model (the noise is a constant offset), so gradient-based attacks still run."""

    def __init__(self, model: nn.Module, g: MembershipNet, params: MemGuardParams) -> None:
        super().__init__()
        self.model, self.g, self.params = model, g, params
        self.g.requires_grad_(False)

    def guard(self, logits: torch.Tensor, coins: torch.Tensor) -> Guarded:
        clean = logits.detach().float()
        with torch.no_grad():
            noisy = find_noise(clean, self.g, self.params)
            p_release = release_probability(clean, noisy, self.g, self.params.epsilon)
        return Guarded(clean, noisy, p_release, coins.to(p_release.dtype) < p_release)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        guarded = self.guard(logits, query_coins(x))
        offset = (guarded.logits - guarded.clean).to(logits.dtype)
        return torch.log_softmax(logits + offset, dim=1)


def guarded_model(model: nn.Module, state: dict[str, torch.Tensor], cfg: RunConfig) -> nn.Module:
    """``query_model`` hook: the network wrapped with the defender's g from the state."""

    g_state = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if not g_state:
        raise RunDirError("this memguard state has no defender classifier (aux/memguard/...); "
                          "it is written when training finishes (defense.pt in a run directory)")
    g = MembershipNet(g_state["net.0.weight"].shape[1])
    g.load_state_dict(g_state)
    return MemGuardModel(model, g.eval(), MEMGUARD.parse_params(cfg.params))


def _check(cfg: RunConfig) -> None:
    if cfg.reference_size == 0:
        raise ConfigError("memguard needs reference rows for its defender; use reference_size > 0 "
                          "(or -1 for the default 10% of the training budget)")


MEMGUARD = register_defense(DefenseSpec(
    name="memguard",
    description="MemGuard: SGD training; released confidence vectors perturbed against the defender's "
                "own membership classifier (L1 budget epsilon)",
    fixed_clients=1,
    params=MemGuardParams,
    reference_fraction=0.1,
    tune_knob=Knob("params.epsilon", 0.05, 1.0),  # the L1 distortion budget (1.0: the authors' largest)
    check_extra=_check,
    after_training=train_defender,
    query_model=guarded_model,
))
