"""Errors a user can cause. The CLI prints their message on one line and exits with code 2."""


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
