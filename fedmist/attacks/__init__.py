"""Membership-inference attacks: one module per attack, each registering itself in ``ATTACKS``.

Every attack maps an ``AttackContext`` to one score per audited example, higher = more likely a
member, and never sees the true membership.
"""

from fedmist.attacks import (  # noqa: F401  (each module registers its attacks)
    canary,
    class_nn,
    confidence,
    entropy,
    label_only,
    lira,
    lira_mistcode,
    loss,
    mentr,
    random_perturbation,
    rmia,
    whitebox,
)
from fedmist.attacks.context import AttackContext
from fedmist.attacks.registry import (
    ATTACKS,
    NEEDS,
    AttackSpec,
    check_attacks,
    register_attack,
    run_attacks,
)

__all__ = ["ATTACKS", "NEEDS", "AttackContext", "AttackSpec", "check_attacks", "register_attack", "run_attacks"]
