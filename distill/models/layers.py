"""Norm, activation and pooling layers selected by name, as in the reference's networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        return AvgPool2x2()
    if kind == "maxpooling":
        return nn.MaxPool2d(2, 2)
    if kind == "none":
        return nn.Identity()
    raise DistillError(f"unknown pooling '{kind}': use avgpooling, maxpooling or none")


class AvgPool2x2(nn.Module):
    """2x2 average pooling with stride 2, the maths of `nn.AvgPool2d(2, 2)` (odd sizes floored): x [..., H, W]
    -> [..., H // 2, W // 2].

    Eager, it averages column pairs with one matrix product and then adds row pairs. On CPU that is
    several times faster than ATen's NCHW pooling kernel, forward and backward. That kernel was a
    quarter of a ConvNet-16 training step on 28x28 images. Both steps are linear maps that autograd
    differentiates twice with cheap ops, which the unrolled gradient engines rely on. Under
    `torch.compile` and off the CPU, ATen's pooling is kept: the compiler generates its own kernel
    (the matrix product measured slower there), and GPU pooling kernels are not the bottleneck.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or x.device.type != "cpu" or min(x.shape[-2:]) < 2:  # < 2: ATen's error
            return F.avg_pool2d(x, 2, 2)
        rows, cols = x.shape[-2] // 2, x.shape[-1] // 2
        pairs = torch.eye(cols, dtype=x.dtype, device=x.device).repeat_interleave(2, dim=0) * 0.5  # [2 * cols, cols]
        half = torch.matmul(x[..., : 2 * rows, : 2 * cols], pairs)  # [..., 2 * rows, cols]: column pairs averaged
        return half.unflatten(-2, (rows, 2)).sum(-2) * 0.5


def conv2d_by_taps(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]
) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=padding)` (stride 1, no dilation, one group) written as one matrix
    product: x [B, C, H, W], weight [O, C, kh, kw], bias [O] or None -> [B, O, H + 2 ph - kh + 1, ...], laid
    out channels-last. The kh * kw shifted copies of the zero-padded image are stacked into [B, Ho * Wo,
    C * kh * kw] rows (in the weight's order: channel, then tap) and multiplied by the flattened weight."""
    ph, pw = padding
    kh, kw = weight.shape[-2:]
    padded = F.pad(x, (pw, pw, ph, ph))
    rows, cols = padded.shape[-2] - kh + 1, padded.shape[-1] - kw + 1
    shifted = [padded[..., i : i + rows, j : j + cols] for i in range(kh) for j in range(kw)]
    taps = torch.stack(shifted, 2).flatten(1, 2).flatten(2)  # [B, C * kh * kw, rows * cols]
    out = torch.matmul(taps.transpose(1, 2), weight.flatten(1).t())  # [B, rows * cols, O]
    if bias is not None:
        out = out + bias
    return out.transpose(1, 2).unflatten(-1, (rows, cols))


class OneChannelConv2d(nn.Conv2d):
    """`nn.Conv2d` for one-channel images (the same parameters, the same maths) that, under
    `torch.compile` on the CPU, runs as `conv2d_by_taps`. There the oneDNN kernels behind ATen's
    convolution are slow for a single input channel with ConvNet's 3-pixel padding: its first layer's
    backward was a quarter of the compiled gradient engine's time at width 16 on 28x28 images. Compiled,
    the stacking of shifted copies fuses into one kernel and the product is one GEMM: the compiled engine
    ran 1.3-1.4x faster at width 16, and no faster at width 128 (`scripts/bench_layers.py first-conv`).
    Eagerly, ATen is faster, so it is kept there and off the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unstrided = self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
        if unstrided and self.padding_mode == "zeros" and torch.compiler.is_compiling() and x.device.type == "cpu":
            return conv2d_by_taps(x, self.weight, self.bias, self.padding)
        return super().forward(x)
