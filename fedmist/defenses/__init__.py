"""Defenses MIST is compared with; each is one module and one registry line."""

from fedmist.defenses.registry import DEFENSES, DefenseSpec, Knob, get_defense, register_defense  # noqa: I001
from fedmist.defenses import mist, sgd, fedavg  # noqa: F401  (registers)
from fedmist.defenses import dpsgd, memguard, mixup_mmd, hamp, advreg, selena, dmp  # noqa: F401  (registers)

__all__ = ["DEFENSES", "DefenseSpec", "Knob", "get_defense", "register_defense"]
