"""Differentiable Siamese Augmentation (DSA), batched, with every random draw from a passed generator.

Mode 'S' of the reference: each call picks ONE op group of the strategy uniformly and applies it
with independent parameters per image. Because all randomness comes from `generator`, a call can be
replayed exactly (the memory-flat unroll engine relies on this).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distill.errors import DistillError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
SCALE_RATIO = 1.2
ROTATE_DEGREES = 15.0
CROP_FRACTION = 0.125
CUTOUT_FRACTION = 0.5


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """'color_crop_...' -> ('color', 'crop', ...); '' or 'none' -> (). Unknown groups raise."""
    if strategy in ("", "none", None):
        return ()
    groups = tuple(strategy.split("_"))
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise DistillError(f"unknown DSA op(s) {unknown} in '{strategy}': use any of {', '.join(GROUPS)}")
    return groups


def dsa(x: torch.Tensor, generator: torch.Generator, strategy: str = DEFAULT_STRATEGY) -> torch.Tensor:
    """Augment images x [B, C, H, W] with one randomly chosen group of `strategy`; differentiable in x.

    `generator` is a CPU torch.Generator; parameters are drawn on the CPU and moved to x's device.
    """
    groups = parse_strategy(strategy)
    if not groups:
        return x
    group = groups[int(torch.randint(len(groups), (1,), generator=generator))]
    return _OPS[group](x, generator)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return (torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low).to(like.device, like.dtype)


def color(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Brightness (+U(-0.5, 0.5)), then saturation (xU(0, 2)), then contrast (xU(0.5, 1.5))."""
    n = len(x)
    x = x + _uniform(n, -0.5, 0.5, g, x).view(n, 1, 1, 1)
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * _uniform(n, 0.0, 2.0, g, x).view(n, 1, 1, 1) + grey
    average = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - average) * _uniform(n, 0.5, 1.5, g, x).view(n, 1, 1, 1) + average


def crop(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Translate each image by up to +-int(0.125 * size + 0.5) pixels, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * CROP_FRACTION + 0.5), int(w * CROP_FRACTION + 0.5)
    dy = torch.randint(-sh, sh + 1, (n,), generator=g).to(x.device)
    dx = torch.randint(-sw, sw + 1, (n,), generator=g).to(x.device)
    padded = F.pad(x, (sw, sw, sh, sh))
    rows = (torch.arange(h, device=x.device).view(1, h) + sh + dy.view(n, 1))  # [n, h]
    cols = (torch.arange(w, device=x.device).view(1, w) + sw + dx.view(n, 1))  # [n, w]
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    # advanced indexing keeps the op differentiable with respect to x
    return padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Zero one square of side int(0.5 * size + 0.5) centred at a random position (clipped at borders).

    The centre is drawn from [0, size] when the side is even and [0, size) when it is odd, as in the
    reference: with an even side the square's "centre" sits between pixels, so one more position
    keeps the last row and column as likely to be cut as the first.
    """
    n, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_FRACTION + 0.5), int(w * CUTOUT_FRACTION + 0.5)
    top = torch.randint(0, h + 1 - ch % 2, (n,), generator=g).to(x.device).view(n, 1, 1) - ch // 2
    left = torch.randint(0, w + 1 - cw % 2, (n,), generator=g).to(x.device).view(n, 1, 1) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror each image horizontally with probability 0.5."""
    mask = (torch.rand(len(x), generator=g) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(3), x)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def scale(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Stretch x and y independently by factors drawn from U(1/1.2, 1.2)."""
    n = len(x)
    sx, sy = _uniform(n, 1 / SCALE_RATIO, SCALE_RATIO, g, x), _uniform(n, 1 / SCALE_RATIO, SCALE_RATIO, g, x)
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
    return _warp(x, theta)


def rotate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rotate each image by an angle drawn from U(-15, 15) degrees."""
    n = len(x)
    angle = _uniform(n, -ROTATE_DEGREES, ROTATE_DEGREES, g, x) * (math.pi / 180)
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
    return _warp(x, theta)


_OPS = {"color": color, "crop": crop, "cutout": cutout, "flip": flip, "scale": scale, "rotate": rotate}
