"""Defenses MIST is compared with; each is one module and one registry line."""

from fedmist.defenses import (  # noqa: F401  (registers)  # noqa: F401  (registers)
    advreg,
    dmp,
    dpsgd,
    hamp,
    memguard,
    mist,
    mixup_mmd,
    selena,
    sgd,
)
from fedmist.defenses.registry import (
    DEFENSES,
    DefenseSpec,
    Knob,
    get_defense,
    register_defense,
)

__all__ = ["DEFENSES", "DefenseSpec", "Knob", "get_defense", "register_defense"]
