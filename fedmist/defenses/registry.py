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
- ``train_loop``: a whole training procedure of its own over the federation (SELENA, DMP).
- ``after_training``: post-hoc work on the finished run (MemGuard's defender, DP-SGD's ε).
- ``query_model``: the model users and attackers query (MemGuard's output perturbation).
- ``tune_knob`` / ``tune_clients``: what ``fedmist tune`` searches to match SGD's accuracy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from fedmist.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from fedmist.config import RunConfig
    from fedmist.engine.jobs import State
    from fedmist.engine.loop import Federation
    from fedmist.runner import Run

AUX = "aux/"  # state keys of a defense's own tensors; everything else is the model's state_dict


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
    check_extra: Callable[["RunConfig"], None] | None = field(default=None, compare=False)
    params: type = NoParams
    local_step: str = "sgd"
    reference_fraction: float = 0.0
    init_aux: Callable[["RunConfig", Any, "nn.Module"], "State"] | None = field(default=None, compare=False)
    train_loop: Callable[["Run", "Federation"], "State"] | None = field(default=None, compare=False)
    after_training: Callable[["Run"], dict] | None = field(default=None, compare=False)
    query_model: Callable[["nn.Module", "State", "RunConfig"], "nn.Module"] | None = field(default=None, compare=False)
    clients_from_params: Callable[[Any], int] | None = field(default=None, compare=False)
    tune_knob: Any = None  # fedmist.tune.Knob: the strength `fedmist tune` searches (None: not tunable)
    tune_clients: tuple[int, ...] = ()  # federation sizes `fedmist tune` tries first (MIST: C)
    # How many epoch reports a ``train_loop`` makes when that differs from ``cfg.epochs`` (SELENA:
    # sub-model epochs then distillation epochs); evaluation, resume and progress count to this.
    total_epochs: Callable[["RunConfig"], int] | None = field(default=None, compare=False)

    def prepare(self, cfg: "RunConfig") -> None:
        """Apply what the defense fixes (e.g. SGD's single client) before validation."""
        if self.fixed_clients is not None:
            cfg.clients = self.fixed_clients
        if self.clients_from_params is not None:
            cfg.clients = self.clients_from_params(self.parse_params(cfg.params))

    def check(self, cfg: "RunConfig") -> None:
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
            typed[key] = _coerce_param(self.name, key, fields[key], value)
        p = self.params(**typed)
        check = getattr(p, "check", None)
        if check is not None:
            check()
        return p

    def last_epoch(self, cfg: "RunConfig") -> int:
        """Number of the run's last epoch report (``cfg.epochs`` unless the defense says otherwise)."""
        return self.total_epochs(cfg) if self.total_epochs is not None else cfg.epochs

    def reference_size(self, cfg: "RunConfig", train_size: int) -> int:
        if cfg.reference_size >= 0:
            return cfg.reference_size
        return int(round(self.reference_fraction * train_size))


def _coerce_param(defense: str, key: str, f: dataclasses.Field, value: Any) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[value.lower()]
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        return type(default)(value)
    except (TypeError, ValueError, KeyError):
        raise ConfigError(f"defense {defense!r} parameter {key!r}: cannot use {value!r} as "
                          f"{type(default).__name__}") from None


def model_part(state: "State") -> "State":
    """The model's own weights (what ``model.pt`` holds), without the defense's ``aux/`` tensors."""
    return {k: v for k, v in state.items() if not k.startswith(AUX)}


def aux_part(state: "State") -> "State":
    return {k: v for k, v in state.items() if k.startswith(AUX)}


DEFENSES: dict[str, DefenseSpec] = {}


def register_defense(spec: DefenseSpec) -> DefenseSpec:
    if spec.name in DEFENSES:
        raise ValueError(f"defense {spec.name!r} is already registered")
    DEFENSES[spec.name] = spec
    return spec
