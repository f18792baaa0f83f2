"""One typed config for a training run, loaded from TOML recipes and overridable from the CLI.

Every field is declared once, below, with its metadata (``setting``): its help text, its group,
whether it changes what a run learns (``trains``), whether recipes carry it and whether Flower's
run-config exposes it. The CLI options, Flower's run-config keys, the resume check, the recipes
``fedmist tune`` writes and the shadow-cache key are all derived from these declarations, so a new
field is one line here.

Recipes in ``experiments/recipes/*.toml`` are flat tables of the fields below (``lambda`` is
the name of ``lam`` everywhere a user sees it; kebab-case keys work too, as in Flower's run-config).
This module is a leaf: it imports nothing else of fedmist but its errors.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from fedmist.errors import ConfigError

XDIFF_LOSSES = ("l1", "l2", "kl")
REPARTITION = ("epoch", "fixed")
MODES = ("virtual", "private", "fl")
# The names users see for fields whose Python name differs (``lambda`` is a keyword).
DISPLAY_NAMES = {"lam": "lambda"}


def setting(default: Any = dataclasses.MISSING, help: str = "", *, group: str = "Training",
            trains: bool = True, recipe: bool = True, flwr: bool = False, option: bool = True,
            factory: Any = None) -> Any:
    """A config field and what the rest of fedmist derives from it.

    ``trains``: changes what the run learns (False: where or how fast it runs; such fields may
    differ on ``--resume`` and do not key the shadow cache). ``recipe``: written into recipes
    ``fedmist tune`` chooses (False: machine- or trial-specific). ``flwr``: a key of
    ``[tool.flwr.app.config]``. ``option``: an option of ``fedmist simulate`` (False: ``--set`` only).
    """
    md = {"help": help, "group": group, "trains": trains, "recipe": recipe, "flwr": flwr, "option": option}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


@dataclass
class RunConfig:
    """Everything needed to rerun a training run (saved as ``config.json``)."""

    dataset: str = setting("location", "location, texas, purchase, cifar10, cifar100, "
                           "synthetic[:texas|:purchase|:cifar10|:cifar100|:RxFxK]", group="Run", flwr=True)
    model: str = setting("", "network; default: the dataset's (mlp, alexnet, resnet18, densenet_bc)", group="Run")
    defense: str = setting("mist", "mist, subspace (MIST phase 1 only), sgd (undefended), dpsgd, mixup_mmd, hamp, "
                           "advreg, selena, dmp or memguard (see README: Defenses); with --mode fl: fedavg, "
                           "dpfedavg or mist",
                           group="Run", flwr=True)
    clients: int = setting(4, "sub-models of MIST / clients of the federation (C)", group="Run", flwr=True)
    epochs: int = setting(100, "training epochs (FL: rounds)", flwr=True)
    lr: float = setting(0.1, "learning rate", flwr=True)
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(0.0, "L2 weight decay")
    batch_size: int = setting(100, "mini-batch size", flwr=True)
    lam: float = setting(14.0, "MIST: weight of the cross-difference loss", group="MIST", flwr=True)
    xdiff_loss: str = setting("l1", "MIST: cross-difference loss, l1 (paper), l2 or kl", group="MIST", flwr=True)
    mixup_alpha: float = setting(0.0, "> 0 enables mixup in phase 1 (MIST+Mixup)", group="MIST", flwr=True)
    repartition: str = setting("epoch", "MIST: partitions redrawn every epoch (paper) or fixed (authors' code)",
                               group="MIST", flwr=True)
    skip_last_xdiff: bool = setting(False, "MIST: no phase 2 in the last epoch (the authors' code)", group="MIST")
    keep_optimizer: bool = setting(False, "MIST: clients keep SGD momentum across phases and epochs (authors' code)", group="MIST")
    lr_schedule: list[int] = setting(help="epochs after which lr is multiplied by 0.1, e.g. 200,250", factory=list)
    lr_cosine: bool = setting(False, "cosine decay: lr x 1/2 (1 + cos(pi (epoch - 1) / (epochs + 1))) in epoch "
                              "1..epochs (HAMP's artefact, DP-SGD); with lr_schedule, both apply")
    train_size: int = setting(0, "target training-set size; 0 = the paper's", group="Run")
    seed: int = setting(0, "training seed", group="Run", recipe=False, flwr=True)
    data_seed: int = setting(-1, "seed of generated (synthetic) data; -1 = seed", group="Run")
    device: str = setting("cpu", "cpu or cuda", group="Resources", trains=False, recipe=False, flwr=True)
    mode: str = setting("virtual", "virtual (server computes MIST's targets), private (peers' weights "
                        "forwarded) or fl (real federated learning)", group="Run", flwr=True)
    data_dir: str = setting("", "data directory; default $FEDMIST_DATA or ../shared/data", group="Resources",
                            trains=False, recipe=False, flwr=True)
    eval_every: int = setting(1, "evaluate every N epochs (the last is always evaluated)", group="Resources",
                              trains=False)
    predict_in_train_reply: bool = setting(True, "phase-1 replies carry the peers' probabilities (2 rounds per "
                                           "epoch); off: a separate query.predict round", group="MIST")
    cpus_per_client: float = setting(1.0, "Ray CPUs per client (2 cores / 1.0 = 2 concurrent clients)",
                                     group="Resources", trains=False, recipe=False, flwr=True)
    gpus_per_client: float = setting(0.0, "fraction of a GPU per client, e.g. 0.25", group="Resources",
                                     trains=False, recipe=False)
    round_timeout: float = setting(600.0, "seconds the server waits for a round's replies", group="Resources",
                                   trains=False, flwr=True)
    min_clients: int = setting(0, "replies a round needs after round_timeout; 0 = every client",
                               group="Resources", flwr=True)
    validation_fraction: float = setting(0.0, "> 0: hold this share of the members out and evaluate on it "
                                         "(fedmist tune)", recipe=False)
    validation_fold: int = setting(0, "which share of the members is held out (0 = the last; fedmist tune --folds)",
                                   recipe=False)
    reference_size: int = setting(-1, "rows of the training budget held out as a reference set; -1 = the "
                                  "defense's default")
    best_validation: bool = setting(False, "release the epoch with the best accuracy on the reference rows "
                                    "(reference_size > 0; never audit or test rows), the model selection of "
                                    "HAMP's artefact for every defense")
    params: dict[str, Any] = setting(help="the defense's own knobs (TOML [params], --set params.K=V)",
                                     factory=dict, recipe=False, option=False)
    # --- real federated learning (mode = "fl") ---------------------------------------------------
    partition: str = setting("iid", "FL: each client's fixed data, iid or dirichlet:ALPHA", group="Federated")
    rounds: int = setting(0, "FL: rounds; > 0 sets epochs", group="Federated")
    local_epochs: int = setting(1, "FL: passes over its own partition a client makes per round", group="Federated")
    record_updates: bool = setting(False, "FL: record every round's global model and every client's update "
                                   "(for fedmist attack --threat)", group="Federated")
    max_record_gb: float = setting(4.0, "FL: refuse to start when the recording would exceed this",
                                   group="Federated")
    fl_dp_noise: float = setting(0.0, "FL: > 0 = DP-FedAvg, noise multiplier z on the clipped average",
                                 group="Federated")
    fl_dp_clip: float = setting(1.0, "FL: DP-FedAvg's L2 clipping norm of each client's update", group="Federated")
    fl_dp_delta: float = setting(1e-5, "FL: the delta that DP-FedAvg's epsilon is reported at", group="Federated")
    active_attack: str = setting("", "FL: client:K does gradient ascent on target rows before upload",
                                 group="Federated")
    active_targets: int = setting(100, "FL: rows the active attacker targets", group="Federated")
    active_lr: float = setting(0.1, "FL: learning rate of the attacker's gradient ascent", group="Federated")
    active_steps: int = setting(1, "FL: full-batch ascent steps on the targets per round", group="Federated")

    def validate(self) -> "RunConfig":
        """Raise ConfigError naming the first bad field; return self so calls chain.

        Checks each field on its own; what depends on the defense or the FL mode is checked where a
        run is prepared (``fedmist.runs.checks``)."""
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.momentum < 0 or self.weight_decay < 0 or self.mixup_alpha < 0:
            raise ConfigError("momentum, weight_decay and mixup_alpha must be >= 0")
        if self.xdiff_loss not in XDIFF_LOSSES:
            raise ConfigError(f"xdiff_loss must be one of {XDIFF_LOSSES}, got {self.xdiff_loss!r}")
        if self.repartition not in REPARTITION:
            raise ConfigError(f"repartition must be one of {REPARTITION}, got {self.repartition!r}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")
        if self.train_size < 0:
            raise ConfigError(f"train_size must be >= 0, got {self.train_size}")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.validation_fold < 0 or self.validation_fold * self.validation_fraction >= 1.0:
            raise ConfigError(f"validation_fold must be >= 0 and leave room for its share of the members, got "
                              f"{self.validation_fold} with validation_fraction {self.validation_fraction}")
        return self

    @property
    def dataset_seed(self) -> int:
        return self.data_seed if self.data_seed >= 0 else self.seed

    # --- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: "RunConfig | None" = None) -> "RunConfig":
        """Build from a flat dict; unknown keys are an error that names them."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        cfg = dataclasses.replace(base) if base is not None else cls()
        for raw_key, value in values.items():
            key = normalize_key(raw_key)
            if key.startswith("params."):  # --set params.noise_multiplier=1.1
                cfg.params = {**cfg.params, key.split(".", 1)[1]: value}
                continue
            if key not in fields:
                known = ", ".join(sorted(display_name(k) for k in fields))
                raise ConfigError(f"unknown config key {raw_key!r}; known keys: {known}")
            if key == "params":
                if not isinstance(value, dict):
                    raise ConfigError(f"config key 'params' must be a table, got {value!r}")
                setattr(cfg, key, {normalize_key(k): v for k, v in value.items()})
                continue
            setattr(cfg, key, coerce(f"config key {display_name(key)!r}", default_of(fields[key]), value))
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path, base: "RunConfig | None" = None) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"recipe {path} is not valid TOML: {err}") from None
        return cls.from_dict(data, base=base)


def parse_sets(items: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as overrides (values stay strings; ``RunConfig.from_dict`` types them).

    >>> parse_sets(["epochs=5", " lam = 2 "])
    {'epochs': '5', 'lam': '2'}
    """
    overrides: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = v.strip()
    return overrides


def normalize_key(key: str) -> str:
    """``lambda`` -> ``lam``; kebab-case -> snake_case.

    >>> normalize_key("lambda"), normalize_key("batch-size")
    ('lam', 'batch_size')
    """
    key = key.strip().replace("-", "_")
    return {v: k for k, v in DISPLAY_NAMES.items()}.get(key, key)


def display_name(key: str) -> str:
    """The name users type (options, recipes, errors): ``lam`` -> ``lambda``."""
    return DISPLAY_NAMES.get(key, key)


def default_of(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def coerce(what: str, default: Any, value: Any) -> Any:
    """``value`` (a string from the CLI or Flower's run-config, or a TOML value) as the type of
    ``default``, or a ConfigError naming ``what``. The one converter of config fields and of the
    defenses' ``[params]``.

    >>> coerce("x", 1, "3"), coerce("x", 0.5, "2"), coerce("x", False, "yes"), coerce("x", [0], "2,5")
    (3, 2.0, True, [2, 5])
    """
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
        if isinstance(default, list):
            if isinstance(value, str):
                return [int(v) for v in value.replace(",", " ").split()]
            return [int(v) for v in value]
        return str(value)
    except (TypeError, ValueError, KeyError):
        raise ConfigError(f"{what}: cannot use {value!r} as {type(default).__name__}") from None


# --- what the rest of fedmist derives from the field declarations --------------------------------
def config_fields(cls: type = RunConfig, **where: Any) -> list[dataclasses.Field]:
    """The fields of ``cls`` whose metadata matches ``where`` (e.g. ``trains=False``)."""
    return [f for f in dataclasses.fields(cls) if all(f.metadata.get(k) == v for k, v in where.items())]


def non_training_keys(cls: type = RunConfig) -> frozenset[str]:
    """Fields that change where or how fast a run trains, not what it learns."""
    return frozenset(f.name for f in config_fields(cls, trains=False))


def flwr_keys(cls: type = RunConfig) -> dict[str, str]:
    """``[tool.flwr.app.config]`` key (kebab-case) -> field name, for the fields Flower exposes."""
    return {display_name(f.name).replace("_", "-"): f.name for f in config_fields(cls, flwr=True)}


def training_differences(saved: dict[str, Any], now: "RunConfig") -> list[str]:
    """``"epochs: saved 2 vs now 3"`` for every training field where a saved config (``config.json``)
    and ``now`` differ; fields the saved config predates count at their default."""
    cls = type(now)
    defaults = cls().to_dict()
    saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
    mine = now.to_dict()
    skip = non_training_keys(cls)
    return [f"{display_name(k)}: saved {saved.get(k)!r} vs now {mine[k]!r}"
            for k in sorted(mine) if k not in skip and not _same_value(saved.get(k), mine[k])]


def _same_value(saved: Any, now: Any) -> bool:
    """Whether a saved value and the current one make the same run. ``--set params.temperature=1``
    stores the string "1" and a recipe the number 1.0; the defense reads both as 1.0, so the
    string is read as the other side's type with ``coerce``, the one converter of config values
    (a study would otherwise refuse to reuse a preset's own run as its sweep point).

    >>> _same_value({"T": "1", "on": "true"}, {"T": 1.0, "on": True}), _same_value("2", 1.0)
    (True, False)
    """
    if isinstance(saved, dict) and isinstance(now, dict):
        return saved.keys() == now.keys() and all(_same_value(saved[k], now[k]) for k in now)
    if isinstance(saved, str) != isinstance(now, str):
        text, typed = (saved, now) if isinstance(saved, str) else (now, saved)
        try:
            return coerce("", typed, text) == typed
        except ConfigError:
            return False
    return saved == now


def parse_client(text: str, clients: int, what: str) -> int:
    """``"client:3"`` -> 3, checking 0 <= 3 < clients.

    >>> parse_client("client:2", 4, "threat")
    2
    """
    kind, _, value = text.strip().partition(":")
    if kind != "client" or not value.strip().lstrip("-").isdigit():
        raise ConfigError(f"{what} must look like client:K (K = 0..{clients - 1}), got {text!r}")
    k = int(value)
    if not 0 <= k < clients:
        raise ConfigError(f"{what} names client {k}, but the federation has clients 0..{clients - 1}")
    return k
