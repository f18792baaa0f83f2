"""Checks of a ``RunConfig`` that depend on more than one field: the defense's own, and the
FL fields against the mode (ConfigError naming the problem). Called where a run is prepared."""

from __future__ import annotations

from fedmist.config import RunConfig, parse_client
from fedmist.data.fl_partition import parse_partition
from fedmist.defenses.registry import DEFENSES, DefenseSpec
from fedmist.errors import ConfigError, require_finite
from fedmist.training.best_epoch import best_validation_wanted


def check_config(cfg: RunConfig, spec: DefenseSpec) -> RunConfig:
    """Every check of a config about to train with defense ``spec``; returns ``cfg``."""
    spec.check(cfg)
    cfg.validate()
    params = spec.parse_params(cfg.params)
    check_fl_config(cfg, spec) if cfg.mode == "fl" else check_not_fl(cfg, spec)
    if best_validation_wanted(cfg, params):
        check_best_validation(cfg, spec)
    return cfg


def check_best_validation(cfg: RunConfig, spec: DefenseSpec) -> None:
    """Best-validation selection needs reference rows to score on, and one round loop to watch."""
    if cfg.reference_size == 0 or (cfg.reference_size < 0 and spec.reference_fraction == 0):
        raise ConfigError(f"best_validation selects the epoch on reference rows, and {cfg.defense} holds none "
                          "out: give reference_size > 0 (rows of the training budget held out)")
    if cfg.mode == "fl":
        raise ConfigError("best_validation picks one model's epoch; --mode fl has no such choice")
    if spec.train_loop is not None:
        raise ConfigError(f"best_validation is not available for {cfg.defense}: it trains with its own "
                          "procedure (several models in turn), whose epochs are not one model's")


def check_fl_config(cfg: RunConfig, spec: DefenseSpec) -> None:
    if not spec.fl_name:
        known = ", ".join(f"{name} ({s.fl_name})" for name, s in sorted(DEFENSES.items()) if s.fl_name)
        raise ConfigError(f"--mode fl trains {known}; got defense {cfg.defense!r}")
    if cfg.clients < 2:
        raise ConfigError(f"--mode fl needs --clients >= 2, got {cfg.clients}")
    parse_partition(cfg.partition)
    if cfg.rounds < 0:
        raise ConfigError(f"rounds must be >= 0 (0 = epochs), got {cfg.rounds}")
    if cfg.local_epochs < 1:
        raise ConfigError(f"local_epochs must be >= 1, got {cfg.local_epochs}")
    require_finite("max_record_gb", cfg.max_record_gb, positive=True, must="a positive number")
    require_finite("fl_dp_noise", cfg.fl_dp_noise, positive=False, must="a finite number >= 0")
    require_finite("fl_dp_clip", cfg.fl_dp_clip, positive=True, must="positive")
    if not 0 < cfg.fl_dp_delta < 1:
        raise ConfigError(f"fl_dp_delta must be in (0, 1), got {cfg.fl_dp_delta}")
    if cfg.fl_dp_noise > 0 and cfg.defense not in ("dpfedavg", "sgd"):
        raise ConfigError("DP-FedAvg (fl_dp_noise > 0) is FedAvg with clipping and noise: use --defense dpfedavg")
    if cfg.active_attack:
        parse_client(cfg.active_attack, cfg.clients, "active_attack")
        if cfg.active_targets < 2:
            raise ConfigError(f"active_targets must be >= 2, got {cfg.active_targets}")
        if cfg.active_steps < 1 or not cfg.active_lr > 0:
            raise ConfigError("active_steps must be >= 1 and active_lr > 0")


def check_not_fl(cfg: RunConfig, spec: DefenseSpec) -> None:
    """FL-only switches are an error outside ``--mode fl`` (they would silently do nothing)."""
    if spec.fl_only:
        raise ConfigError(f"{cfg.defense} is real federated learning: add --mode fl (mode is {cfg.mode!r})")
    used = [name for name, on in (("record_updates", cfg.record_updates), ("active_attack", bool(cfg.active_attack)),
                                  ("fl_dp_noise", cfg.fl_dp_noise > 0), ("rounds", cfg.rounds > 0),
                                  ("partition", cfg.partition != "iid"), ("local_epochs", cfg.local_epochs != 1))
            if on]
    if used:
        raise ConfigError(f"{', '.join(used)} only apply with --mode fl (mode is {cfg.mode!r})")
