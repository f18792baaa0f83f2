"""Defenses MIST is compared with; each is one module and one registry line."""

from fedmist.defenses.registry import DEFENSES, DefenseSpec, register_defense
from fedmist.defenses import mist, sgd  # noqa: F401  (registers)

__all__ = ["DEFENSES", "DefenseSpec", "register_defense"]
