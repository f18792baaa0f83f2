"""The one error type the audit and the attacks raise for problems a user can cause."""

from fedmist.errors import FedmistError


class AuditError(FedmistError):
    """An audit cannot run as asked: a missing input, a stale shadow cache, a bad option."""
