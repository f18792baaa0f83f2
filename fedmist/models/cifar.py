"""CIFAR classifiers used in the membership-inference literature, in plain torch.

Written out rather than taken from torchvision because the CIFAR variants differ from the
ImageNet ones (small stems, no early downsampling) and torchvision is only an optional extra.
All take (N, 3, 32, 32) images and return (N, num_classes) logits.
"""

from __future__ import annotations

import torch
from torch import nn


def alexnet(num_classes: int) -> nn.Module:
    """AlexNet for 32×32 inputs: 5 convs (64-192-384-256-256), ReLU, 3 max-pools, one linear layer.

    The variant of the pytorch-classification repository used by Nasr et al., MIST and SELENA;
    the spatial size goes 32 → 8 → 4 → 2 → 1, leaving 256 features for the classifier.
    """
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(256, num_classes),
    )


class _BasicBlock(nn.Module):
    """Two 3×3 convs with a residual connection (projected by a 1×1 conv when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(planes),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet18(num_classes: int) -> nn.Module:
    """ResNet-18, CIFAR variant: 3×3 stride-1 stem and no max-pool (≈11.2M parameters)."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
    ]
    in_planes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_BasicBlock(in_planes, planes, stride), _BasicBlock(planes, planes, 1)]
        in_planes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


class _DenseBottleneck(nn.Module):
    """BN-ReLU-1×1 conv (4·k channels) then BN-ReLU-3×3 conv (k channels), concatenated to the input."""

    def __init__(self, in_planes: int, growth_rate: int) -> None:
        super().__init__()
        inner = 4 * growth_rate
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_planes, inner, 1, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


def _transition(in_planes: int, out_planes: int) -> nn.Module:
    """BN-ReLU-1×1 conv halving the channels (the "C" of BC), then 2×2 average pooling."""
    return nn.Sequential(
        nn.BatchNorm2d(in_planes),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_planes, out_planes, 1, bias=False),
        nn.AvgPool2d(2),
    )


def densenet_bc(num_classes: int, depth: int = 100, growth_rate: int = 12) -> nn.Module:
    """DenseNet-BC (Huang et al. 2017) for CIFAR; depth 100, growth 12 gives ≈0.8M parameters.

    Three dense blocks of (depth - 4) / 6 bottleneck layers each, separated by transitions
    with compression 0.5, as in the paper's CIFAR configuration.
    """
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(f"DenseNet-BC depth must be 6n + 4 with n >= 1, got {depth}")
    if growth_rate < 1:
        raise ValueError(f"growth_rate must be positive, got {growth_rate}")
    per_block = (depth - 4) // 6
    planes = 2 * growth_rate
    layers: list[nn.Module] = [nn.Conv2d(3, planes, 3, padding=1, bias=False)]
    for block in range(3):
        for _ in range(per_block):
            layers.append(_DenseBottleneck(planes, growth_rate))
            planes += growth_rate
        if block < 2:
            layers.append(_transition(planes, planes // 2))
            planes //= 2
    layers += [nn.BatchNorm2d(planes), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
               nn.Flatten(), nn.Linear(planes, num_classes)]
    model = nn.Sequential(*layers)
    for m in model.modules():  # He initialisation, as in the reference implementation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
