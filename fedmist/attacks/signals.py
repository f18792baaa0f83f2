"""Numerically stable per-example signals computed from logits, in float64.

Attacks on confident models compare probabilities like 1 - 1e-20 with 1 - 1e-25; computed
from softmax outputs in float32 both are 1.0. Everything here works on logits with
log-sum-exp so that such differences survive.

All functions take logits of shape ``(..., n, K)`` and labels of shape ``(n,)`` (leading axes,
e.g. shadow models, broadcast) and return float64 arrays of shape ``(..., n)``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp

from fedmist.errors import AuditError


def _check(logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim < 2:
        raise AuditError(f"logits must have shape (..., n, K), got {z.shape}")
    if labels is not None:
        y = np.asarray(labels)
        if y.shape != z.shape[-2:-1]:
            raise AuditError(f"labels shape {y.shape} does not match logits shape {z.shape}")
        if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
            raise AuditError(f"labels must lie in 0..{z.shape[-1] - 1}")
    if not np.isfinite(z).all():
        raise AuditError("logits contain NaN or infinity")
    return z


def _onehot(labels: np.ndarray, k: int) -> np.ndarray:
    return np.arange(k) == np.asarray(labels)[:, None]


def lira_phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence φ = log p_y − log Σ_{y'≠y} p_{y'} = z_y − logsumexp(z_{≠y}).

    The second form never forms a probability, so φ stays exact when p_y rounds to 1.

    >>> round(float(lira_phi(np.array([[2.0, 0.0, 0.0]]), np.array([0]))[0]), 6)
    1.306853
    """
    z = _check(logits, labels)
    hot = _onehot(labels, z.shape[-1])
    z_y = np.take_along_axis(z, np.broadcast_to(np.asarray(labels)[:, None], z.shape[:-1] + (1,)), axis=-1)[..., 0]
    return z_y - logsumexp(np.where(hot, -np.inf, z), axis=-1)


def true_class_logprob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p_y = −softplus(−φ): accurate down to log p_y ≈ −1e-300, unlike log(softmax)."""
    return -np.logaddexp(0.0, -lira_phi(logits, labels))


def log_one_minus_softmax(logits: np.ndarray) -> np.ndarray:
    """log(1 − p_i) for every class, shape ``(..., n, K)``.

    For p_i ≤ 1/2 ``log1p(−p_i)`` is exact; only the arg-max class can exceed 1/2, and for it
    log(1 − p_i) = −softplus(z_i − logsumexp(z_{≠i})) avoids the cancellation in 1 − p_i.
    """
    z = _check(logits)
    with np.errstate(divide="ignore"):  # the arg-max entry may be log1p(-1); replaced below
        out = np.log1p(-np.exp(log_softmax(z, axis=-1)))
    top = np.argmax(z, axis=-1)[..., None]
    z_top = np.take_along_axis(z, top, axis=-1)[..., 0]
    rest = np.where(np.arange(z.shape[-1]) == top, -np.inf, z)
    np.put_along_axis(out, top, (-np.logaddexp(0.0, z_top - logsumexp(rest, axis=-1)))[..., None], axis=-1)
    return out


def entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of the softmax output."""
    logp = log_softmax(_check(logits), axis=-1)
    return -(np.exp(logp) * logp).sum(axis=-1)


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal's Mentr = −(1−p_y) log p_y − Σ_{i≠y} p_i log(1−p_i); low for members."""
    z = _check(logits, labels)
    hot = _onehot(labels, z.shape[-1])
    logp = log_softmax(z, axis=-1)
    log1m = log_one_minus_softmax(z)
    logp_y = true_class_logprob(z, labels)
    one_minus_py = np.exp(np.where(hot, log1m, 0.0).sum(axis=-1))
    others = np.where(hot, 0.0, np.exp(logp) * log1m).sum(axis=-1)
    return -one_minus_py * logp_y - others
