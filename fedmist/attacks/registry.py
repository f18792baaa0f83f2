"""Attack registry: adding an attack is one module that calls ``register_attack`` once."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from fedmist.attacks.context import AttackContext
from fedmist.errors import AuditError

NEEDS = frozenset({"outputs", "shadows", "model"})

# What each kind of need means in terms of context fields, and how a user supplies it.
_NEED_FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    "outputs": (("logits",), "target outputs on the audited examples"),
    "shadows": (("keep",), "shadow models (audit with --shadows N, N even and >= 2)"),
    "model": (("model", "x"), "query access to the target model and the audited inputs"),
}
_FIELD_HELP = {
    "shadow_logits": "shadow-model logits on the audited examples (shadows/logits.npy)",
    "shadow_models": "the shadow models themselves (shadows/models/*.pt)",
}


@dataclass(frozen=True)
class AttackSpec:
    """One attack: ``score(ctx)`` returns (n,) float64 scores, higher = more likely member.

    ``needs`` names the kinds of access it requires (a subset of ``NEEDS``); ``fields`` names
    specific context fields beyond those that it cannot run without. ``min_shadows``: the fewest
    shadows it can score with (4 for attacks that fit a variance to >= 2 IN and 2 OUT scores per
    example of a balanced audit), checked before any shadow trains.
    """

    name: str
    description: str
    needs: frozenset[str]
    score: Callable[[AttackContext], np.ndarray]
    fields: tuple[str, ...] = ()
    min_shadows: int = 2

    def __post_init__(self) -> None:
        unknown = set(self.needs) - NEEDS
        if unknown:
            raise ValueError(f"attack {self.name!r}: unknown needs {sorted(unknown)}; use {sorted(NEEDS)}")

    def missing(self, ctx: AttackContext) -> list[str]:
        """Descriptions of the inputs this attack needs that ``ctx`` lacks (empty = can run)."""
        out: list[str] = []
        for need in sorted(self.needs):
            fields, help_text = _NEED_FIELDS[need]
            if any(getattr(ctx, f) is None for f in fields):
                out.append(help_text)
        if "shadows" in self.needs and ctx.keep is not None and ctx.shadow_logits is None and ctx.shadow_scores is None:
            out.append("shadow-model scores or logits on the audited examples")
        out += [_FIELD_HELP.get(f, f) for f in self.fields if getattr(ctx, f) is None]
        return out


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec) -> AttackSpec:
    """Add ``spec`` to ``ATTACKS``; a second attack with the same name is refused."""
    if spec.name in ATTACKS:
        raise ValueError(f"attack {spec.name!r} is already registered")
    ATTACKS[spec.name] = spec
    return spec


def attack_seed(ctx: AttackContext, name: str) -> np.random.Generator:
    """A generator per (context seed, attack): attacks stay reproducible and independent."""
    return np.random.default_rng([ctx.seed, zlib.crc32(name.encode())])


ATTACK_GROUPS = {
    "lira": ("lira_online", "lira_offline", "lira_online_fixed", "lira_offline_fixed"),
}


def expand_attack_names(names: Iterable[str]) -> list[str]:
    """Names as given, with group names (``lira``: its four variants) expanded, duplicates dropped.

    >>> expand_attack_names(["loss", "lira", "lira_online"])
    ['loss', 'lira_online', 'lira_offline', 'lira_online_fixed', 'lira_offline_fixed']
    """
    out: list[str] = []
    for name in names:
        for n in ATTACK_GROUPS.get(name, (name,)):
            if n not in out:
                out.append(n)
    return out


def check_attacks(names: Iterable[str], ctx: AttackContext | None = None) -> list[AttackSpec]:
    """Resolve names to specs; with ``ctx``, also check each attack's inputs are there."""
    specs = []
    for name in names:
        if name not in ATTACKS:
            raise AuditError(f"unknown attack {name!r}; known: {', '.join(sorted(ATTACKS))}")
        spec = ATTACKS[name]
        if ctx is not None:
            missing = spec.missing(ctx)
            if missing:
                raise AuditError(f"attack {name!r} needs {'; '.join(missing)}")
        specs.append(spec)
    return specs


def run_attacks(names: Iterable[str], ctx: AttackContext,
                on_done: Callable[[str, float], None] | None = None) -> dict[str, np.ndarray]:
    """Score every audited example with each named attack, after checking all their inputs.

    Returns ``{name: (n,) float64}``, higher = more likely member. ``on_done(name, seconds)``
    is called after each attack (progress, timing).
    """
    specs = check_attacks(list(names), ctx)
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        start = time.perf_counter()
        scores = np.asarray(spec.score(ctx), dtype=np.float64)
        if scores.shape != (ctx.n,):
            raise RuntimeError(f"attack {spec.name!r} returned shape {scores.shape}, expected ({ctx.n},)")
        bad = int((~np.isfinite(scores)).sum())
        if bad:
            raise AuditError(f"attack {spec.name!r} produced {bad} non-finite scores (degenerate shadows or outputs?)")
        out[spec.name] = scores
        if on_done is not None:
            on_done(spec.name, time.perf_counter() - start)
    return out
