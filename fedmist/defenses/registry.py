"""Defense registry: a dict from name to spec; adding a defense is one file and one line.

A defense plugs into the shared engine at a few named points, all optional:

- ``params``: a dataclass of its own knobs with the paper's defaults (``[params]`` in a recipe,
  ``--set params.NAME=VALUE`` on the command line); unknown or mistyped knobs are a ConfigError.
- ``local_step``: the name of the phase-1 training step (``fedmist.training.steps``) the clients
  run instead of plain SGD (``dpsgd``, ``mmd``, ``hamp``, ``advreg`` ...).
- ``reference_fraction``: share of the training budget held out as a reference / validation set
  that the defense may use but never trains on with labels as members (MMD, AdvReg, MemGuard).
- ``init_aux``: tensors of the defense's own (AdvReg's attack model ...) carried in the training
  state under ``aux/`` keys, so they travel in Flower messages and checkpoints like the weights.
- ``train_loop``: a whole training procedure of its own over the federation (SELENA, DMP), called
  as ``train_loop(run, federation, rounds)`` with the engine's round loop ``rounds`` handed in, so
  a defense never imports the engine.
- ``after_training``: post-hoc work on the finished run (MemGuard's defender, DP-SGD's ε).
- ``query_model``: the model users and attackers query (MemGuard's output perturbation).
- ``tune_knob`` / ``tune_clients``: what ``fedmist tune`` searches to match SGD's accuracy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from fedmist.config import RunConfig, coerce, default_of
from fedmist.errors import ConfigError
from fedmist.training.jobs import (  # noqa: F401
    AUX,
    Federation,
    Rounds,
    State,
    TrainingRun,
    aux_part,
    model_part,
)
from fedmist.training.local import initial_momentum
from fedmist.training.workspace import initial_model


@dataclass(frozen=True)
class Knob:
    """A defense's strength: config ``key`` (``lam`` or ``params.NAME``) searched in [lo, hi];
    larger = stronger defense (lower accuracy), searched on a log scale when ``log``."""

    key: str
    lo: float
    hi: float
    log: bool = True
    integer: bool = False

    def mid(self, a: float, b: float) -> float:
        m = math.sqrt(a * b) if self.log and a > 0 else (a + b) / 2
        return float(round(m)) if self.integer else m

    def grid(self, n: int) -> list[float]:
        """``n`` values from ``lo`` to ``hi`` (geometric when ``log``), for a frontier sweep.

        >>> Knob("x", 1, 16).grid(5), Knob("L", 2, 20, log=False, integer=True).grid(4)
        ([1.0, 2.0, 4.0, 8.0, 16.0], [2.0, 8.0, 14.0, 20.0])
        """
        if n < 2:
            raise ConfigError(f"a sweep needs at least 2 points, got {n}")
        if self.log and self.lo > 0:
            values = [self.lo * (self.hi / self.lo) ** (i / (n - 1)) for i in range(n)]
        else:
            values = [self.lo + (self.hi - self.lo) * i / (n - 1) for i in range(n)]
        values = [float(round(v)) if self.integer else float(f"{v:.4g}") for v in values]
        return list(dict.fromkeys(values))


@dataclass(frozen=True)
class NoParams:
    """A defense without knobs of its own."""


@dataclass(frozen=True)
class DefenseSpec:
    """How a defense trains through the shared federation engine.

    ``xdiff``: run MIST's phase 2 (cross-difference) after phase 1 every epoch.
    ``fixed_clients``: the federation size this defense always uses (SGD is a 1-client federation).
    ``min_clients``: smallest federation that makes sense (MIST needs peers to compare against).
    ``check_extra``: extra validation of a config, raising ConfigError.
    The remaining hooks are described in the module docstring.
    """

    name: str
    description: str
    xdiff: bool = False
    fixed_clients: int | None = None
    min_clients: int = 1
    fl_name: str = ""  # what it is called in real FL (--mode fl), e.g. "FedAvg"; "" = not an FL algorithm
    fl_only: bool = False  # only meaningful in real FL (fedavg, dpfedavg)
    recipe_from: str = ""  # the defense whose shipped recipe it trains with when it has none of its own
    check_extra: Callable[[RunConfig], None] | None = field(default=None, compare=False)
    params: type = NoParams
    local_step: str = "sgd"
    reference_fraction: float = 0.0
    init_aux: Callable[[RunConfig, Any, nn.Module], State] | None = field(default=None, compare=False)
    train_loop: Callable[[TrainingRun, Federation, Rounds], State] | None = field(default=None, compare=False)
    after_training: Callable[[Any], dict] | None = field(default=None, compare=False)
    query_model: Callable[[nn.Module, State, RunConfig], nn.Module] | None = field(default=None, compare=False)
    clients_from_params: Callable[[Any], int] | None = field(default=None, compare=False)
    tune_knob: Knob | None = None  # the strength `fedmist tune` searches (None: not tunable)
    tune_more: tuple[Knob, ...] = ()  # further strengths tune searches after it, one at a time
    tune_clients: tuple[int, ...] = ()  # federation sizes `fedmist tune` tries first (MIST: C)
    # How many epoch reports a ``train_loop`` makes when that differs from ``cfg.epochs`` (SELENA:
    # sub-model epochs then distillation epochs); evaluation, resume and progress count to this.
    total_epochs: Callable[[RunConfig], int] | None = field(default=None, compare=False)

    def prepare(self, cfg: RunConfig) -> None:
        """Apply what the defense fixes (e.g. SGD's single client) before validation."""
        if self.fixed_clients is not None:
            cfg.clients = self.fixed_clients
        if self.clients_from_params is not None:
            cfg.clients = self.clients_from_params(self.parse_params(cfg.params))

    def check(self, cfg: RunConfig) -> None:
        if cfg.clients < self.min_clients:
            raise ConfigError(
                f"defense {self.name!r} needs --clients >= {self.min_clients}, got {cfg.clients}"
            )
        if self.check_extra is not None:
            self.check_extra(cfg)

    def parse_params(self, values: dict[str, Any]) -> Any:
        """The typed knobs of this defense from a recipe's ``[params]``; names the bad key."""
        fields = {f.name: f for f in dataclasses.fields(self.params)}
        typed = {}
        for key, value in values.items():
            if key not in fields:
                known = ", ".join(sorted(fields)) or "none"
                raise ConfigError(f"defense {self.name!r} has no parameter {key!r}; its parameters: {known}")
            typed[key] = coerce(f"defense {self.name!r} parameter {key!r}", default_of(fields[key]), value)
        p = self.params(**typed)
        check = getattr(p, "check", None)
        if check is not None:
            check()
        return p

    def initial_state(self, cfg: RunConfig) -> State:
        """The seeded θ̄_0, plus the defense's own initial tensors (``aux/`` keys, e.g. AdvReg's
        attack model), drawn right after the weights from the same seed."""
        fresh = initial_model(cfg)
        state = {k: v.detach().cpu().clone() for k, v in fresh.state_dict().items()}
        if self.init_aux is not None:
            aux = self.init_aux(cfg, self.parse_params(cfg.params), fresh)
            bad = [k for k in aux if not k.startswith(AUX)]
            if bad:
                raise ValueError(f"defense {self.name!r}: init_aux keys must start with 'aux/', got {bad}")
            state.update({k: v.detach().cpu().clone() for k, v in aux.items()})
        state.update(initial_momentum(fresh, cfg.clients) if cfg.keep_optimizer and cfg.momentum else {})
        return state

    def last_epoch(self, cfg: RunConfig) -> int:
        """Number of the run's last epoch report (``cfg.epochs`` unless the defense says otherwise)."""
        return self.total_epochs(cfg) if self.total_epochs is not None else cfg.epochs

    def reference_size(self, cfg: RunConfig, train_size: int) -> int:
        if cfg.reference_size >= 0:
            return cfg.reference_size
        return int(round(self.reference_fraction * train_size))


DEFENSES: dict[str, DefenseSpec] = {}


def get_defense(name: str) -> DefenseSpec:
    """The registered defense ``name``, or a ConfigError listing the known ones."""
    if name not in DEFENSES:
        raise ConfigError(f"unknown defense {name!r}; known: {', '.join(sorted(DEFENSES))}")
    return DEFENSES[name]


def register_defense(spec: DefenseSpec) -> DefenseSpec:
    if spec.name in DEFENSES:
        raise ValueError(f"defense {spec.name!r} is already registered")
    DEFENSES[spec.name] = spec
    return spec
