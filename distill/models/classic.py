"""LeNet, AlexNet, VGG-11 and MLP as defined in the reference's networks."""

from __future__ import annotations

import torch
from torch import nn

from distill.models.layers import make_norm
from distill.models.registry import feature_count, register_model


class LeNet(nn.Module):
    """conv5x5(6) - relu - maxpool - conv5x5(16) - relu - maxpool - FC 120 - FC 84 - FC classes."""

    def __init__(self, channels: int, num_classes: int, resolution: tuple[int, int]):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=2 if channels == 1 else 0),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(feature_count(self.features, channels, resolution), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class AlexNet(nn.Module):
    """The DC-style AlexNet (no norm): five convs (128, 192, 256, 192, 192), three max-pools, Linear."""

    def __init__(self, channels: int, num_classes: int, resolution: tuple[int, int]):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, kernel_size=5, padding=4 if channels == 1 else 2),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(192, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Linear(feature_count(self.features, channels, resolution), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


VGG11_PLAN = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG-11: conv3x3 - norm (instance norm by default) - ReLU blocks with max-pools, then Linear."""

    def __init__(self, channels: int, num_classes: int, resolution: tuple[int, int], norm: str = "instancenorm"):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, size = channels, list(resolution)
        for i, item in enumerate(VGG11_PLAN):
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                size = [s // 2 for s in size]
                continue
            padding = 3 if channels == 1 and i == 0 else 1
            layers.append(nn.Conv2d(in_channels, item, kernel_size=3, padding=padding))
            size = [s + 2 * padding - 2 for s in size]
            layers += [make_norm(norm, item, tuple(size)), nn.ReLU()]
            in_channels = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(feature_count(self.features, channels, resolution), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class MLP(nn.Module):
    """Three fully connected layers with 128 hidden units and ReLU."""

    def __init__(self, channels: int, num_classes: int, resolution: tuple[int, int], hidden: int = 128):
        super().__init__()
        inputs = channels * resolution[0] * resolution[1]
        self.classifier = nn.Sequential(
            nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.flatten(1))


register_model("lenet")(LeNet)
register_model("alexnet")(AlexNet)
register_model("vgg11")(VGG11)
register_model("mlp")(MLP)


@register_model("vgg11_bn")
def vgg11_bn(channels, num_classes, resolution) -> VGG11:
    """VGG-11 with batch norm."""
    return VGG11(channels, num_classes, resolution, norm="batchnorm")
