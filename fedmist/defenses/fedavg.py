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


def _fl_baseline(name: str, fl_name: str, description: str, check) -> DefenseSpec:
    """An FL-only entry trained with the sgd recipe's hyperparameters."""
    return register_defense(DefenseSpec(name=name, description=description, fl_name=fl_name, fl_only=True,
                                        recipe_from="sgd", check_extra=check))


FEDAVG = _fl_baseline("fedavg", "FedAvg", "FedAvg (--mode fl): each client trains on its own data, the server "
                      "averages by data size", _no_noise)
DPFEDAVG = _fl_baseline("dpfedavg", "DP-FedAvg", "DP-FedAvg (--mode fl): FedAvg with client-side clipping and "
                        "server-side Gaussian noise", _needs_noise)
