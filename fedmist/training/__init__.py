"""MIST's training math as plain functions (no Flower): testable and reusable by every engine."""

from fedmist.training.aggregate import average_states
from fedmist.training.evaluate import accuracy, predict_logits
from fedmist.training.local import local_epoch
from fedmist.training.xdiff import (
           true_class_probs,
           xdiff_epoch,
           xdiff_loss,
           xdiff_targets,
)

__all__ = ["average_states", "accuracy", "predict_logits", "local_epoch", "true_class_probs",
           "xdiff_epoch", "xdiff_loss", "xdiff_targets"]
