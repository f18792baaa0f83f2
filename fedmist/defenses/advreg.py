"""Adversarial regularisation (Nasr, Shokri & Houmansadr, CCS 2018): a min-max game between the
classifier f and the defender's own membership-inference model h.

Per member batch: ``k`` steps training h to tell members from reference (non-member) rows by
ascending the inference gain

    G(h) = ½ mean_members log h(f(x), y) + ½ mean_reference log(1 − h(f(x'), y')),

then one classifier step on CE + ``alpha`` × mean_members log h(f(x), y) (Nasr et al.'s Algorithm 1:
the classifier lowers the attack's confidence on its members while fitting them).

h takes the softmax vector and the one-hot label (Nasr et al.'s architecture: a 1024-512-64 branch
for the prediction, a 128-64 branch for the label, a 256-128-64-1 head). Its weights live in the
training state under ``aux/advreg/...``: they travel in the Flower messages, checkpoints and
``defense.pt`` with the model's, so h keeps learning across epochs and survives ``--resume``.

The reference set is the run's reference split, 20 % of the training budget by default (Nasr et
al. give the defender a reference set of its own; here it comes out of the training budget, so it
is kept small to cost few members, as for Mixup + MMD). Reference batches are drawn with
replacement, as large as the member batch; ``--set reference_size=N`` changes the set's size.

Options for the settings of HAMP's artefact (DependableSystemsLab/MIA_defense_HAMP,
location/train-advreg.py and util/purchase_{attack,private}_train.py), which ran this baseline on
Location: ``k`` ≈ 15 attack batches per classifier batch, ``attack_batch_size`` rows per side
(half the classifier's batch there), h on the classifier's logits (``attack_input = "logits"``),
Adam for h (``attack_optimizer = "adam"``), and that code's objective (``objective = "mse"``):
h's sigmoid output is fitted to 1 (members) / 0 (reference) by mean squared error, and the classifier
adds ``alpha`` × mean h(f(x), y) over its members; ``classifier_optimizer = "adam"`` trains the
classifier with Adam as that code does. Adam's moments (h's and the classifier's) restart every
epoch (optimisers are built per step, as fedmist's SGD is); the artefact's best-validation
checkpoint is not a defense setting (see experiments/results/location-baseline-settings.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedmist.config import RunConfig
from fedmist.defenses.registry import DefenseSpec, Knob, register_defense
from fedmist.errors import ConfigError
from fedmist.training.batches import gather, shuffled_batches
from fedmist.training.local import make_optimizer, sgd_pass
from fedmist.training.steps import StepContext, register_step
from fedmist.training.workspace import get_workspace

PREFIX = "aux/advreg/"
H_SEED = 0xAD5E  # offset of h's initialisation seed from the run's seed

Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (probs, one-hot) -> membership logits


@dataclass(frozen=True)
class AdvRegParams:
    """``alpha``: weight of the inference gain in the classifier's loss (Nasr et al.'s λ, which
    they vary from 1 upwards; 1, the mildest, is the default because the MIST paper found adv-reg
    already costs test accuracy on the tabular datasets). ``k``: attack steps per classifier step
    (Nasr et al.'s Algorithm 1; public ports of their code alternate the two one for one).
    ``attack_lr``: h's SGD learning rate (momentum as the classifier's)."""

    alpha: float = 1.0
    k: int = 1
    attack_lr: float = 0.01
    # rows per side (members, reference) of each attack batch; 0 = the classifier batch's size
    attack_batch_size: int = 0
    attack_input: str = "softmax"  # what h reads of f: "softmax" (Nasr et al.) or "logits" (HAMP's artefact)
    attack_optimizer: str = "sgd"  # h's optimiser: "sgd" (momentum as the classifier's) or "adam"
    # "log": Nasr et al.'s gain G and α·mean log h; "mse": HAMP's artefact (MSE fit of h, α·mean h)
    objective: str = "log"
    # the classifier's optimiser: "sgd" (the run's lr and momentum, as every fedmist step) or "adam"
    # (HAMP's artefact; the run's lr, moments restarted every epoch)
    classifier_optimizer: str = "sgd"

    def check(self) -> None:
        if self.alpha < 0:
            raise ConfigError(f"advreg: alpha must be >= 0, got {self.alpha}")
        if self.k < 1:
            raise ConfigError(f"advreg: k must be >= 1, got {self.k}")
        if not self.attack_lr > 0:
            raise ConfigError(f"advreg: attack_lr must be positive, got {self.attack_lr}")
        if self.attack_batch_size < 0:
            raise ConfigError(f"advreg: attack_batch_size must be >= 0, got {self.attack_batch_size}")
        for name, value, known in (("attack_input", self.attack_input, ("softmax", "logits")),
                                   ("attack_optimizer", self.attack_optimizer, ("sgd", "adam")),
                                   ("objective", self.objective, ("log", "mse")),
                                   ("classifier_optimizer", self.classifier_optimizer, ("sgd", "adam"))):
            if value not in known:
                raise ConfigError(f"advreg: {name} must be one of {', '.join(known)}; got {value!r}")


class InferenceModel(nn.Module):
    """h(f(x), y): membership logit from the prediction vector and the one-hot label."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(num_classes, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(),
                                      nn.Linear(512, 64), nn.ReLU())
        self.labels = nn.Sequential(nn.Linear(num_classes, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.combine = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                     nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return self.combine(torch.cat([self.features(probs), self.labels(onehot)], dim=1)).squeeze(1)


def inference_gain(h: Attack, members: tuple[torch.Tensor, torch.Tensor],
                   reference: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Nasr et al.'s G: ½ mean log h on members + ½ mean log(1 − h) on reference rows; each is a
    (softmax probs, one-hot labels) pair. h gives logits, so log h = logsigmoid(z) stays finite."""
    return 0.5 * member_log_h(h, *members) + 0.5 * F.logsigmoid(-h(*reference)).mean()


def member_log_h(h: Attack, probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """mean log h(f(x), y) over members: the classifier's regulariser (it minimises it)."""
    return F.logsigmoid(h(probs, onehot)).mean()


def init_attack(cfg: RunConfig, params: AdvRegParams, model: nn.Module) -> dict[str, torch.Tensor]:
    """h's initial weights as ``aux/advreg/...`` tensors, seeded from the run's seed."""

    num_classes = get_workspace(cfg).dataset.num_classes  # may build the workspace: not under the seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + H_SEED)
        h = InferenceModel(num_classes)
    return {PREFIX + k: v.detach().clone() for k, v in h.state_dict().items()}


def attack_from_aux(aux: dict[str, torch.Tensor], num_classes: int, device: str) -> InferenceModel:
    h = InferenceModel(num_classes).to(device)
    mine = {k[len(PREFIX):]: v for k, v in aux.items() if k.startswith(PREFIX)}
    if not mine:
        raise ValueError("the advreg step needs h's weights (aux/advreg/...) in the state; "
                         "was the run started by another defense?")
    h.load_state_dict(mine)
    return h


def attack_view(logits: torch.Tensor, p: AdvRegParams) -> torch.Tensor:
    """What h reads of the classifier's output: its softmax, or the logits themselves."""
    return logits if p.attack_input == "logits" else torch.softmax(logits, dim=1)


def _probs_onehot(model: nn.Module, ctx: StepContext, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = gather(ctx.x, rows, ctx.device)
    y = ctx.y[torch.from_numpy(rows)].to(ctx.device)
    return attack_view(model(x), ctx.params), F.one_hot(y, ctx.num_classes).float()


def attack_loss(h: Attack, members: tuple[torch.Tensor, torch.Tensor],
                reference: tuple[torch.Tensor, torch.Tensor], objective: str) -> torch.Tensor:
    """What h minimises: −G (``"log"``), or the mean squared error of sigmoid(h) against 1 for
    members and 0 for reference rows over both sides together (``"mse"``, HAMP's artefact)."""
    if objective == "log":
        return -inference_gain(h, members, reference)
    out = torch.sigmoid(torch.cat([h(*members), h(*reference)]))
    target = torch.cat([torch.ones(len(members[0])), torch.zeros(len(reference[0]))]).to(out.device)
    return F.mse_loss(out, target)


def classifier_penalty(h: Attack, view: torch.Tensor, onehot: torch.Tensor, objective: str) -> torch.Tensor:
    """The regulariser the classifier adds (× α): mean log h (``"log"``) or mean h (``"mse"``)."""
    return member_log_h(h, view, onehot) if objective == "log" else torch.sigmoid(h(view, onehot)).mean()


def make_attack_optimizer(h: nn.Module, p: AdvRegParams, momentum: float) -> torch.optim.Optimizer:
    if p.attack_optimizer == "adam":
        return torch.optim.Adam(h.parameters(), lr=p.attack_lr)
    return make_optimizer(h, p.attack_lr, momentum)


def _attack_steps(ctx: StepContext, h: InferenceModel, opt: torch.optim.Optimizer, n: int) -> None:
    """``k`` steps of h with fresh member and reference batches of ``n`` rows each; f is frozen."""
    p: AdvRegParams = ctx.params
    ctx.model.eval()
    for _ in range(p.k):
        m_rows = ctx.rows[ctx.rng.choice(len(ctx.rows), size=min(n, len(ctx.rows)), replace=False)]
        r_rows = ctx.reference[ctx.rng.choice(len(ctx.reference), size=n, replace=n > len(ctx.reference))]
        with torch.no_grad():
            members, reference = _probs_onehot(ctx.model, ctx, m_rows), _probs_onehot(ctx.model, ctx, r_rows)
        loss = attack_loss(h, members, reference, p.objective)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    ctx.model.train()


@register_step("advreg")
def advreg_step(ctx: StepContext) -> float:
    """One epoch of the min-max game; h's updated weights go back into ``ctx.aux``."""
    p: AdvRegParams = ctx.params
    if len(ctx.reference) == 0:
        raise ValueError("the advreg step needs a reference (non-member) set; set reference_size > 0")
    model = ctx.model
    h = attack_from_aux(ctx.aux, ctx.num_classes, ctx.device)
    opt_h = make_attack_optimizer(h, p, ctx.momentum)

    def loss(pos: np.ndarray, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        # k steps of the inference model, then one of the classifier
        _attack_steps(ctx, h, opt_h, p.attack_batch_size or len(pos))
        logits = model(xb)
        h.requires_grad_(False)
        out = F.cross_entropy(logits, yb) + p.alpha * classifier_penalty(
            h, attack_view(logits, p), F.one_hot(yb, ctx.num_classes).float(), p.objective)
        h.requires_grad_(True)
        return out

    if p.classifier_optimizer == "adam":
        mean_loss = adam_pass(ctx, loss)
    else:
        mean_loss = sgd_pass(model, ctx.x, ctx.y, ctx.rows, loss, lr=ctx.lr, batch_size=ctx.batch_size, rng=ctx.rng,
                             momentum=ctx.momentum, weight_decay=ctx.weight_decay, device=ctx.device,
                             what="adversarial-regularisation")
    ctx.aux.update({PREFIX + k: v.detach().clone() for k, v in h.state_dict().items()})
    return mean_loss


def adam_pass(ctx: StepContext, batch_loss: Callable[[np.ndarray, torch.Tensor, torch.Tensor], torch.Tensor]) -> float:
    """``sgd_pass``'s loop over the members with Adam (lr ``ctx.lr``) for the classifier instead of
    SGD: HAMP's artefact trains the AdvReg classifier with Adam. Returns the mean loss."""
    model = ctx.model
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=ctx.lr, weight_decay=ctx.weight_decay)
    total, seen = 0.0, 0
    for pos in shuffled_batches(len(ctx.rows), ctx.batch_size, ctx.rng):
        rows = ctx.rows[pos]
        loss = batch_loss(pos, gather(ctx.x, rows, ctx.device), ctx.y[torch.from_numpy(rows)].to(ctx.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(rows)
        seen += len(rows)
    if not np.isfinite(total):
        raise FloatingPointError("adversarial-regularisation loss became NaN/Inf (lr too high?)")
    return total / max(seen, 1)


def _check(cfg: RunConfig) -> None:
    if cfg.mixup_alpha > 0:
        raise ConfigError("advreg does not combine with mixup; leave --mixup-alpha at 0")


ADVREG = register_defense(DefenseSpec(
    name="advreg",
    description="adversarial regularisation (Nasr et al. 2018): min-max game with an inference model h",
    fixed_clients=1,
    check_extra=_check,
    params=AdvRegParams,
    local_step="advreg",
    reference_fraction=0.2,
    init_aux=init_attack,
    tune_knob=Knob("params.alpha", 0.25, 8.0),  # Nasr et al.'s lambda
))
