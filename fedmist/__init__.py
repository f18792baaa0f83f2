"""fedmist: train membership-inference-resistant models with MIST on Flower, and audit them.

The public API: ``load_run`` (a finished run directory back as Python objects), ``RunConfig``
and ``FedmistError``. ``load_run`` is imported on first use, so ``import fedmist.config`` stays light.
"""

from typing import Any

from fedmist.config import RunConfig
from fedmist.errors import FedmistError

__all__ = ["FedmistError", "LoadedRun", "RunConfig", "load_run"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("load_run", "LoadedRun"):
        from fedmist.runs import load
        return getattr(load, name)
    raise AttributeError(f"module 'fedmist' has no attribute {name!r}")
