"""Defense registry: a dict from name to spec; adding a defense is one file and one line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from fedmist.errors import ConfigError

if TYPE_CHECKING:
    from fedmist.config import RunConfig


@dataclass(frozen=True)
class DefenseSpec:
    """How a defense trains through the shared federation engine.

    ``xdiff``: run MIST's phase 2 (cross-difference) after phase 1 every epoch.
    ``fixed_clients``: the federation size this defense always uses (SGD is a 1-client federation).
    ``min_clients``: smallest federation that makes sense (MIST needs peers to compare against).
    ``check``: extra validation of a config, raising ConfigError.
    """

    name: str
    description: str
    xdiff: bool = False
    fixed_clients: int | None = None
    min_clients: int = 1
    check_extra: Callable[["RunConfig"], None] | None = field(default=None, compare=False)

    def prepare(self, cfg: "RunConfig") -> None:
        """Apply what the defense fixes (e.g. SGD's single client) before validation."""
        if self.fixed_clients is not None:
            cfg.clients = self.fixed_clients

    def check(self, cfg: "RunConfig") -> None:
        if cfg.clients < self.min_clients:
            raise ConfigError(
                f"defense {self.name!r} needs --clients >= {self.min_clients}, got {cfg.clients}"
            )
        if self.check_extra is not None:
            self.check_extra(cfg)


DEFENSES: dict[str, DefenseSpec] = {}


def register_defense(spec: DefenseSpec) -> DefenseSpec:
    if spec.name in DEFENSES:
        raise ValueError(f"defense {spec.name!r} is already registered")
    DEFENSES[spec.name] = spec
    return spec
