"""What an attack may look at. Membership labels are deliberately not part of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedmist.attacks.signals import lira_phi
from fedmist.errors import AuditError


@dataclass(frozen=True, eq=False)
class AttackContext:
    """Everything an attack may use about the ``n`` audited examples.

    The true membership of the audited examples is *not* here, so no attack can read it; the
    audit keeps it apart and only uses it to score the attacks. The audited examples must come
    in an order that says nothing about membership (the audit shuffles them).

    Shapes: ``S`` shadow models, ``K`` classes, ``A`` augmentations (queries per example).

    - ``logits`` (n, K): target model logits. ``labels`` (n,): true classes.
    - ``target_scores`` (n, A): target φ per augmentation; default φ of ``logits`` (A = 1).
    - ``shadow_logits`` (S, n, K) and/or ``shadow_scores`` (S, n, A): the same for the shadows.
    - ``keep`` (S, n) bool: whether shadow ``s`` trained on example ``j``.
    - ``model`` (eval mode) and ``x`` (n, *features) float tensor: query access to the target.
    - ``shadow_models``: ``i -> nn.Module`` (eval mode) for attacks that query shadows.
    - ``y_pop``, ``pop_logits`` (m, K), ``pop_shadow_logits`` (S, m, K): population points that
      are in no audited set (RMIA's z samples); without them RMIA uses the other audited points.
    - ``seed``: attacks draw all randomness from it.
    """

    logits: np.ndarray
    labels: np.ndarray
    target_scores: np.ndarray | None = None
    shadow_logits: np.ndarray | None = None
    shadow_scores: np.ndarray | None = None
    keep: np.ndarray | None = None
    model: nn.Module | None = None
    x: torch.Tensor | None = None
    shadow_models: Callable[[int], nn.Module] | None = None
    y_pop: np.ndarray | None = None
    pop_logits: np.ndarray | None = None
    pop_shadow_logits: np.ndarray | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.logits.ndim != 2:
            raise AuditError(f"logits must be (n, K), got shape {self.logits.shape}")
        n, k = self.logits.shape
        _expect("labels", self.labels, (n,))
        if n and (self.labels.min() < 0 or self.labels.max() >= k):
            raise AuditError(f"labels must lie in 0..{k - 1}")
        if self.target_scores is not None:
            _expect("target_scores", self.target_scores, (n, None))
        s = None
        if self.keep is not None:
            if self.keep.dtype != bool or self.keep.ndim != 2 or self.keep.shape[1] != n:
                raise AuditError(f"keep must be a bool (S, {n}) array, got {self.keep.dtype} {self.keep.shape}")
            s = self.keep.shape[0]
        if self.shadow_logits is not None:
            _expect("shadow_logits", self.shadow_logits, (s, n, k))
            s = self.shadow_logits.shape[0]
        if self.shadow_scores is not None:
            _expect("shadow_scores", self.shadow_scores, (s, n, None))
            s = self.shadow_scores.shape[0]
        if (self.shadow_logits is not None or self.shadow_scores is not None) and self.keep is None:
            raise AuditError("shadow outputs were given without keep (which shadow trained on what)")
        if self.x is not None and len(self.x) != n:
            raise AuditError(f"x has {len(self.x)} rows, logits have {n}")
        if self.pop_logits is not None:
            if self.y_pop is None:
                raise AuditError("pop_logits needs y_pop (the population labels)")
            _expect("pop_logits", self.pop_logits, (None, k))
            _expect("y_pop", self.y_pop, (len(self.pop_logits),))
            if self.pop_shadow_logits is not None:
                _expect("pop_shadow_logits", self.pop_shadow_logits, (s, len(self.pop_logits), k))

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def n_shadows(self) -> int:
        return 0 if self.keep is None else int(self.keep.shape[0])

    def target_phi(self) -> np.ndarray:
        """(n, A) target φ scores: the given ones, else φ of the logits with A = 1."""
        if self.target_scores is not None:
            return np.asarray(self.target_scores, dtype=np.float64)
        return lira_phi(self.logits, self.labels)[:, None]

    def shadow_phi(self) -> np.ndarray:
        """(S, n, A) shadow φ scores: the given ones, else φ of the shadow logits with A = 1."""
        if self.shadow_scores is not None:
            return np.asarray(self.shadow_scores, dtype=np.float64)
        if self.shadow_logits is None:
            raise AuditError("no shadow scores or shadow logits in the attack context")
        return lira_phi(self.shadow_logits, self.labels)[..., None]


def _expect(name: str, arr: np.ndarray, shape: tuple[int | None, ...]) -> None:
    """Raise unless ``arr`` has ``shape`` (None = any size on that axis)."""
    ok = arr.ndim == len(shape) and all(want is None or got == want for got, want in zip(arr.shape, shape))
    if not ok:
        pretty = "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"
        raise AuditError(f"{name} must have shape {pretty}, got {tuple(arr.shape)}")
