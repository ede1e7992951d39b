"""CIFAR-style ResNet-18 (instance norm by default), with batch-norm and average-pool variants."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.models.layers import make_norm
from distill.models.registry import feature_count, register_model


def _norm(kind: str, channels: int) -> nn.Module:
    return make_norm(kind, channels, (1, 1)) if kind != "layernorm" else nn.GroupNorm(1, channels)


class BasicBlock(nn.Module):
    """conv3x3 - norm - ReLU - conv3x3 - norm, plus a shortcut (1x1 conv + norm when the shape changes).

    With `avg_pool_downsample`, a stride-2 conv becomes a stride-1 conv followed by 2x2 average pooling.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, avg_pool_downsample: bool):
        super().__init__()
        conv_stride = 1 if avg_pool_downsample else stride
        down = [nn.AvgPool2d(2, 2)] if avg_pool_downsample and stride != 1 else []
        self.conv1 = nn.Sequential(nn.Conv2d(in_planes, planes, 3, conv_stride, 1, bias=False), *down)
        self.bn1 = _norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, conv_stride, bias=False), *down, _norm(norm, planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """Images [B, C, H, W] -> logits. Stages of 2 blocks at 64/128/256/512 channels, strides 1/2/2/2."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        resolution: tuple[int, int],
        norm: str = "instancenorm",
        avg_pool_downsample: bool = False,
        stem_stride: int = 1,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, 64, 3, stem_stride, 1, bias=False), _norm(norm, 64), nn.ReLU()]
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for block_stride in (stride, 1):
                layers.append(BasicBlock(in_planes, planes, block_stride, norm, avg_pool_downsample))
                in_planes = planes
        # The reference pools 4x4 -> 1 (avg_pool2d(out, 4)) for ResNet18 and keeps the 4x4 map for _AP.
        layers.append(nn.AdaptiveAvgPool2d(1) if not avg_pool_downsample else nn.Identity())
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(feature_count(self.features, channels, resolution), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@register_model("resnet18")
def resnet18(channels, num_classes, resolution, **options) -> ResNet18:
    """ResNet-18 with instance norm (GroupNorm(C, C)), the reference's default."""
    return ResNet18(channels, num_classes, resolution, **options)


@register_model("resnet18_bn")
def resnet18_bn(channels, num_classes, resolution) -> ResNet18:
    """ResNet-18 with batch norm."""
    return ResNet18(channels, num_classes, resolution, norm="batchnorm")


@register_model("resnet18_ap")
def resnet18_ap(channels, num_classes, resolution) -> ResNet18:
    """ResNet-18 whose stride-2 convs are stride-1 convs followed by 2x2 average pooling."""
    return ResNet18(channels, num_classes, resolution, avg_pool_downsample=True)


@register_model("resnet18_bn_ap")
def resnet18_bn_ap(channels, num_classes, resolution) -> ResNet18:
    """ResNet-18 with batch norm and average-pool downsampling."""
    return ResNet18(channels, num_classes, resolution, norm="batchnorm", avg_pool_downsample=True)
