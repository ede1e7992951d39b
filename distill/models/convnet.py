"""ConvNet: the reference's distillation architecture (conv3x3 - norm - act - pool) x depth, then Linear."""

from __future__ import annotations

import torch
from torch import nn

from distill.models.layers import OneChannelConv2d, make_activation, make_norm, make_pool
from distill.models.registry import feature_count, register_model


class ConvNet(nn.Module):
    """Images [B, C, H, W] -> logits [B, num_classes]."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        resolution: tuple[int, int],
        width: int = 128,
        depth: int = 3,
        act: str = "relu",
        norm: str = "instancenorm",
        pool: str = "avgpooling",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, size = channels, list(resolution)
        for d in range(depth):
            # the reference pads 1-channel inputs by 3 in the first conv (28 px -> 32 px)
            padding = 3 if channels == 1 and d == 0 else 1
            conv = OneChannelConv2d if in_channels == 1 else nn.Conv2d  # the same layer, compiled faster on CPU
            layers.append(conv(in_channels, width, kernel_size=3, padding=padding))
            size = [s + 2 * padding - 2 for s in size]
            layers.append(make_norm(norm, width, tuple(size)))
            layers.append(make_activation(act))
            if pool != "none":
                layers.append(make_pool(pool))
                size = [s // 2 for s in size]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(feature_count(self.features, channels, resolution), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@register_model("convnet")
def convnet(channels, num_classes, resolution, **options) -> ConvNet:
    """ConvNet, default width 128, depth 3, instance norm, ReLU, average pooling."""
    return ConvNet(channels, num_classes, resolution, **options)


@register_model("convnet_d4")
def convnet_d4(channels, num_classes, resolution, **options) -> ConvNet:
    """ConvNet of depth 4, for 64 px inputs (Tiny ImageNet)."""
    return ConvNet(channels, num_classes, resolution, **{"depth": 4, **options})


@register_model("convnet_d5")
def convnet_d5(channels, num_classes, resolution, **options) -> ConvNet:
    """ConvNet of depth 5, for 128 px inputs (ImageNet subsets)."""
    return ConvNet(channels, num_classes, resolution, **{"depth": 5, **options})


@register_model("convnet_bn")
def convnet_bn(channels, num_classes, resolution, **options) -> ConvNet:
    """ConvNet with batch norm."""
    return ConvNet(channels, num_classes, resolution, **{"norm": "batchnorm", **options})
