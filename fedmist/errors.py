"""Errors a user can cause. The CLI prints their message on one line and exits with code 2."""

import math


class FedmistError(Exception):
    """Base class for every error caused by user input (bad config, missing data, ...)."""


class ConfigError(FedmistError):
    """A config key, value or combination is invalid."""


class DataError(FedmistError):
    """A data file is missing, corrupted, or has the wrong shape."""


class RunDirError(FedmistError):
    """A run directory is missing, incomplete, or would be overwritten."""


class FederationError(FedmistError):
    """A client failed, replied with bad arrays, or the federation could not proceed."""


def require_finite(name: str, value: float, *, positive: bool, must: str) -> None:
    """ConfigError ``"{name} must be {must}, got {value}"`` unless ``value`` is finite and > 0
    (``positive``) or >= 0: the one check behind every noise scale, clip norm and budget knob."""
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ConfigError(f"{name} must be {must}, got {value}")


class AuditError(FedmistError):
    """An audit cannot run as asked: a missing input, a stale shadow cache, a bad option."""
