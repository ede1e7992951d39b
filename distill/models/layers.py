"""Norm, activation and pooling layers selected by name, as in the reference's networks."""

from __future__ import annotations

from torch import nn

from distill.errors import DistillError


def make_norm(kind: str, channels: int, spatial: tuple[int, int]) -> nn.Module:
    """instancenorm = GroupNorm(C, C) (per-sample, per-channel, affine; no running stats, as the
    reference's ConvNet uses), batchnorm, layernorm (over C x H x W), groupnorm (4 groups), none."""
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "layernorm":
        return nn.LayerNorm([channels, *spatial], elementwise_affine=True)
    if kind == "groupnorm":
        return nn.GroupNorm(4, channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise DistillError(f"unknown norm '{kind}': use instancenorm, batchnorm, layernorm, groupnorm or none")


def make_activation(kind: str) -> nn.Module:
    """relu, leakyrelu (slope 0.01) or sigmoid."""
    table = {"relu": nn.ReLU, "leakyrelu": lambda: nn.LeakyReLU(0.01), "sigmoid": nn.Sigmoid}
    if kind not in table:
        raise DistillError(f"unknown activation '{kind}': use {', '.join(table)}")
    return table[kind]()


def make_pool(kind: str) -> nn.Module:
    """avgpooling / maxpooling (2x2, stride 2) or none."""
    if kind == "avgpooling":
        return nn.AvgPool2d(2, 2)
    if kind == "maxpooling":
        return nn.MaxPool2d(2, 2)
    if kind == "none":
        return nn.Identity()
    raise DistillError(f"unknown pooling '{kind}': use avgpooling, maxpooling or none")
