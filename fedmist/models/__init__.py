"""Model registry: name -> constructor(feature_shape, num_classes)."""

from __future__ import annotations

import math
from typing import Callable

from torch import nn

from fedmist.errors import ConfigError
from fedmist.models.mlp import MLP

Builder = Callable[[tuple[int, ...], int], nn.Module]
MODELS: dict[str, Builder] = {}


def register_model(name: str, builder: Builder) -> None:
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = builder


def _cifar(name: str) -> Builder:
    def build(shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if tuple(shape) != (3, 32, 32):
            raise ConfigError(f"model {name!r} needs 3x32x32 images, the dataset has shape {shape}")
        from fedmist.models import cifar
        return getattr(cifar, name)(num_classes)
    return build


register_model("mlp", lambda shape, k: MLP(math.prod(shape), k))
register_model("mlp-small", lambda shape, k: MLP(math.prod(shape), k, hidden=(64, 32)))
register_model("alexnet", _cifar("alexnet"))
register_model("resnet18", _cifar("resnet18"))
register_model("densenet_bc", _cifar("densenet_bc"))


def build_model(name: str, feature_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](tuple(feature_shape), num_classes)
