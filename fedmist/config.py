"""One typed config for a training run, loaded from TOML recipes and overridable from the CLI.

Recipes in ``experiments/recipes/*.toml`` are flat tables of the fields below (``lambda`` is
accepted for ``lam``; kebab-case keys work too, as in Flower's run-config).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmist.errors import ConfigError

XDIFF_LOSSES = ("l1", "l2", "kl")
REPARTITION = ("epoch", "fixed")
MODES = ("virtual", "private", "fl")


@dataclass
class RunConfig:
    """Everything needed to rerun a training run (saved as ``config.json``)."""

    dataset: str = "location"
    model: str = ""  # "" = the dataset's default model
    defense: str = "mist"
    clients: int = 4
    epochs: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 100
    lam: float = 14.0
    xdiff_loss: str = "l1"
    mixup_alpha: float = 0.0
    repartition: str = "epoch"
    skip_last_xdiff: bool = False
    lr_schedule: list[int] = field(default_factory=list)  # epochs where lr is multiplied by 0.1
    train_size: int = 0  # 0 = the dataset's paper size
    seed: int = 0
    data_seed: int = -1  # seed of generated (synthetic) data; -1 = ``seed``. Shadows vary ``seed`` only.
    device: str = "cpu"
    mode: str = "virtual"
    data_dir: str = ""  # "" = FEDMIST_DATA or ../shared/data
    eval_every: int = 1
    predict_in_train_reply: bool = True  # False: a separate query.predict round (3 rounds per epoch)
    cpus_per_client: float = 1.0
    gpus_per_client: float = 0.0
    round_timeout: float = 600.0
    min_clients: int = 0  # replies a round needs to proceed after round_timeout; 0 = every client
    validation_fraction: float = 0.0  # > 0: hold this share of the members out and evaluate on it (fedmist tune)
    reference_size: int = -1  # rows held out of the training budget as a reference set; -1 = defense's default
    params: dict[str, Any] = field(default_factory=dict)  # the defense's own knobs (TOML [params], --set params.K=V)
    # --- real federated learning (mode = "fl"; fedmist.fl) ------------------------------------
    partition: str = "iid"  # each client's fixed own data: "iid" or "dirichlet:ALPHA" (label skew)
    rounds: int = 0  # FL rounds; > 0 sets ``epochs`` (one epoch report = one round); 0 = ``epochs``
    local_epochs: int = 1  # passes over its own partition a client makes per round
    record_updates: bool = False  # save every round's global model and every client's upload (updates/)
    max_record_gb: float = 4.0  # refuse to start when the estimated recording exceeds this
    fl_dp_noise: float = 0.0  # > 0: DP-FedAvg, Gaussian noise multiplier z on the clipped average
    fl_dp_clip: float = 1.0  # DP-FedAvg: L2 clipping norm of every client's update (client side)
    fl_dp_delta: float = 1e-5  # DP-FedAvg: the δ that ε is reported at
    active_attack: str = ""  # "client:K": participant K does gradient ascent on target rows before upload
    active_targets: int = 100  # rows the active attacker targets (half other clients' members, half non-members)
    active_lr: float = 0.1  # learning rate of the attacker's gradient ascent
    active_steps: int = 1  # full-batch ascent steps on the targets per round

    def validate(self) -> "RunConfig":
        """Raise ConfigError naming the first bad field; return self so calls chain."""
        from fedmist.defenses import DEFENSES

        if self.defense not in DEFENSES:
            raise ConfigError(f"unknown defense {self.defense!r}; known: {', '.join(sorted(DEFENSES))}")
        DEFENSES[self.defense].check(self)
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
        DEFENSES[self.defense].parse_params(self.params)
        from fedmist.fl.checks import check_fl_config, check_not_fl
        check_fl_config(self) if self.mode == "fl" else check_not_fl(self)
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
                raise ConfigError(f"unknown config key {raw_key!r}; known keys: {', '.join(sorted(fields))}")
            setattr(cfg, key, _coerce(key, fields[key], value))
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
    """``lambda`` -> ``lam``; kebab-case -> snake_case."""
    key = key.replace("-", "_")
    return "lam" if key == "lambda" else key


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Convert strings from Flower's run-config / CLI into the field's type, or explain."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ValueError(value)
            return {normalize_key(k): v for k, v in value.items()}
        if isinstance(default, list):
            if isinstance(value, str):
                return [int(v) for v in value.replace(",", " ").split()]
            return [int(v) for v in value]
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r}: cannot use {value!r} as {type(default).__name__}") from None
