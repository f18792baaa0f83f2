"""MIST (Li, Li & Ribeiro, USENIX Security 2024) and its phase-1-only ablation."""

from fedmist.config import RunConfig
from fedmist.defenses.registry import DefenseSpec, Knob, register_defense
from fedmist.errors import ConfigError


def _check_lambda(cfg: RunConfig) -> None:
    if not cfg.lam > 0:
        raise ConfigError(f"MIST needs a positive --lambda, got {cfg.lam}")


MIST = register_defense(DefenseSpec(
    name="mist",
    description="MIST: C sub-models trained on disjoint partitions, cross-difference phase, averaged",
    xdiff=True,
    min_clients=2,
    fl_name="MIST-in-FL (private-data mode)",
    check_extra=_check_lambda,
    tune_knob=Knob("lam", 0.25, 64.0),
    tune_clients=(2, 3, 4),
))

SUBSPACE = register_defense(DefenseSpec(
    name="subspace",
    description="MIST phase 1 only (sub-models on disjoint partitions, averaged; no xdiff)",
    min_clients=2,
))
