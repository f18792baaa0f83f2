"""Accuracy and logits of a model on rows of an in-memory dataset."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedmist.training.batches import gather


def predict_logits(model: nn.Module, x: torch.Tensor, indices: np.ndarray, batch_size: int = 1024,
                   device: str = "cpu") -> torch.Tensor:
    """Logits (len(indices), K) on the CPU, in eval mode, without gradients."""
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            outs.append(model(gather(x, indices[start:start + batch_size], device)).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: np.ndarray, device: str = "cpu") -> float:
    if len(indices) == 0:
        return float("nan")
    pred = predict_logits(model, x, indices, device=device).argmax(1)
    return float((pred == y[torch.from_numpy(indices)]).float().mean())


def class_probs(model: nn.Module, x: torch.Tensor, indices: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Softmax probability vectors (len(indices), K) as float32: soft labels for distillation."""
    logits = predict_logits(model, x, indices, device=device)
    return torch.softmax(logits, dim=1).numpy().astype(np.float32) if len(indices) else np.empty((0, 0), np.float32)
