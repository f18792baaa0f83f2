"""The CIFAR architectures produce logits of the right shape and have their published sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedmist.models.cifar import alexnet, densenet_bc, resnet18


@pytest.fixture(autouse=True)
def one_thread():
    """Batches of 2 images: thread-pool overhead dominates (30x slower on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("build", [alexnet, resnet18, densenet_bc])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_logits_shape(build, num_classes):
    torch.manual_seed(0)
    model = build(num_classes)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, num_classes)
    out.sum().backward()  # trainable end to end
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, num_classes)


def test_published_parameter_counts():
    assert 0.70e6 <= n_params(densenet_bc(10)) <= 0.85e6  # DenseNet-BC (100, 12): 0.77M
    assert 0.70e6 <= n_params(densenet_bc(100, depth=100, growth_rate=12)) <= 0.85e6
    assert abs(n_params(resnet18(10)) - 11.17e6) < 0.05e6  # CIFAR ResNet-18: 11,173,962
    assert abs(n_params(alexnet(10)) - 2.47e6) < 0.01e6  # CIFAR AlexNet: 2,472,266


def test_alexnet_layer_widths():
    convs = [m for m in alexnet(10).modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 192, 384, 256, 256]


def test_resnet18_keeps_full_resolution_in_the_stem():
    stem = next(m for m in resnet18(10).modules() if isinstance(m, nn.Conv2d))
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in resnet18(10).modules())


def test_densenet_depth_must_fit_three_blocks():
    with pytest.raises(ValueError, match="6n \\+ 4"):
        densenet_bc(10, depth=99)
    assert n_params(densenet_bc(10, depth=40, growth_rate=12)) < n_params(densenet_bc(10))


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_synthetic_cifar_has_cifar_shape_is_seeded_and_learnable(name, classes):
    """Speed work at CIFAR shapes without the files: real shape, same data for the same seed, and
    class structure a nearest-class-mean rule finds (so training has a signal)."""
    from fedmist.data.cifar import synthetic_cifar
    from fedmist.data.registry import DATASETS

    assert f"synthetic:{name}" in DATASETS
    d = synthetic_cifar(name, seed=3, rows=4000)
    assert d.x.shape == (4000, 3, 32, 32) and d.x.dtype == np.float32 and d.y.dtype == np.int64
    assert (d.name, d.num_classes, d.synthetic) == (f"synthetic:{name}", classes, True)
    assert d.y.min() >= 0 and d.y.max() < classes and len(np.unique(d.y)) == classes
    again, other = synthetic_cifar(name, seed=3, rows=4000), synthetic_cifar(name, seed=4, rows=4000)
    np.testing.assert_array_equal(again.x, d.x)
    assert not np.array_equal(other.x, d.x)
    flat, half = d.x.reshape(len(d.x), -1), len(d.x) // 2
    means = np.stack([flat[:half][d.y[:half] == k].mean(0) for k in range(classes)])
    pred = (flat[half:] @ means.T - 0.5 * (means ** 2).sum(1)).argmax(1)
    assert (pred == d.y[half:]).mean() > 0.9
