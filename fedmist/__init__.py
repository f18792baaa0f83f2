"""fedmist: train membership-inference-resistant models with MIST on Flower, and audit them."""

from fedmist.errors import FedmistError
from fedmist.loading import LoadedRun, load_run

__all__ = ["FedmistError", "LoadedRun", "load_run"]
__version__ = "0.1.0"
