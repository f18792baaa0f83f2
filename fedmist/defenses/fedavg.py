"""Real federated learning's baselines, named for what runs (``--mode fl``): FedAvg (McMahan et al.
2017) and DP-FedAvg (McMahan et al. 2018: client-side clipping, server-side Gaussian noise, the
formulas of Flower's DP strategy wrappers). The FL round itself is ``fedmist.engine.fl``."""

from fedmist.config import RunConfig
from fedmist.defenses.registry import DefenseSpec, register_defense
from fedmist.errors import ConfigError


def _no_noise(cfg: RunConfig) -> None:
    if cfg.fl_dp_noise > 0:
        raise ConfigError("fedavg adds no noise; with --fl-dp-noise use --defense dpfedavg")


def _needs_noise(cfg: RunConfig) -> None:
    if not cfg.fl_dp_noise > 0:
        raise ConfigError("dpfedavg needs --fl-dp-noise Z > 0 (the noise multiplier; --fl-dp-clip sets the clip norm)")


FEDAVG = register_defense(DefenseSpec(
    name="fedavg",
    description="FedAvg (--mode fl): each client trains on its own data, the server averages by data size",
    fl_name="FedAvg",
    fl_only=True,
    recipe_from="sgd",
    check_extra=_no_noise,
))

DPFEDAVG = register_defense(DefenseSpec(
    name="dpfedavg",
    description="DP-FedAvg (--mode fl): FedAvg with client-side clipping and server-side Gaussian noise",
    fl_name="DP-FedAvg",
    fl_only=True,
    recipe_from="sgd",
    check_extra=_needs_noise,
))
