"""Differentiable Siamese Augmentation (DSA), batched, with every random draw from a passed generator.

Mode 'S' of the reference: each call picks ONE op group of the strategy uniformly and applies it
with independent parameters per image. Drawing and applying are separate (`draw_dsa`, `apply_dsa`):
the draws come from a CPU generator in a fixed order, so a call can be replayed exactly (the
memory-flat engines rely on this), and all draws of an unroll can be moved to the GPU in one copy
instead of one small copy per op and step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


@dataclass
class DsaDraw:
    """One call's random choices: the op group and its per-image parameters (each a tensor [B])."""

    group: str
    params: dict[str, torch.Tensor]

    def to(self, device: torch.device | str) -> "DsaDraw":
        return DsaDraw(self.group, {k: v.to(device) for k, v in self.params.items()})


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) * (high - low) + low


def _cut_side(size: int) -> int:
    return int(size * CUTOUT_FRACTION + 0.5)


def _shift(size: int) -> int:
    return int(size * CROP_FRACTION + 0.5)


def draw_dsa(n: int, height: int, width: int, generator: torch.Generator, strategy: str = DEFAULT_STRATEGY
             ) -> DsaDraw | None:
    """Draw one call's op group and parameters for n images of height x width (CPU tensors); None when
    the strategy is empty."""
    groups = parse_strategy(strategy)
    if not groups:
        return None
    group = groups[int(torch.randint(len(groups), (1,), generator=generator))]
    g = generator
    if group == "color":
        params = {"brightness": _uniform(n, -0.5, 0.5, g), "saturation": _uniform(n, 0.0, 2.0, g),
                  "contrast": _uniform(n, 0.5, 1.5, g)}
    elif group == "crop":
        sh, sw = _shift(height), _shift(width)
        params = {"dy": torch.randint(-sh, sh + 1, (n,), generator=g), "dx": torch.randint(-sw, sw + 1, (n,), generator=g)}
    elif group == "cutout":
        # the centre is drawn from [0, size] when the side is even and [0, size) when it is odd, as in the
        # reference: with an even side the square's centre sits between pixels, so one more position keeps
        # the last row and column as likely to be cut as the first
        ch, cw = _cut_side(height), _cut_side(width)
        params = {"top": torch.randint(0, height + 1 - ch % 2, (n,), generator=g) - ch // 2,
                  "left": torch.randint(0, width + 1 - cw % 2, (n,), generator=g) - cw // 2}
    elif group == "flip":
        params = {"mirror": torch.rand(n, generator=g) < 0.5}
    elif group == "scale":
        params = {"sx": _uniform(n, 1 / SCALE_RATIO, SCALE_RATIO, g), "sy": _uniform(n, 1 / SCALE_RATIO, SCALE_RATIO, g)}
    else:
        params = {"angle": _uniform(n, -ROTATE_DEGREES, ROTATE_DEGREES, g) * (math.pi / 180)}
    return DsaDraw(group, params)


def apply_dsa(x: torch.Tensor, draw: DsaDraw | None) -> torch.Tensor:
    """Apply a draw to images x [B, C, H, W] (the draw's tensors on x's device, or moved there); differentiable in x."""
    if draw is None:
        return x
    params = {k: (v.to(x.device, x.dtype) if v.is_floating_point() else v.to(x.device)) for k, v in draw.params.items()}
    return _OPS[draw.group](x, params)


def dsa(x: torch.Tensor, generator: torch.Generator, strategy: str = DEFAULT_STRATEGY) -> torch.Tensor:
    """Augment images x [B, C, H, W] with one randomly chosen group of `strategy`; differentiable in x.

    `generator` is a CPU torch.Generator; parameters are drawn on the CPU and moved to x's device.
    """
    return apply_dsa(x, draw_dsa(len(x), x.shape[-2], x.shape[-1], generator, strategy))


def color(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Brightness (+U(-0.5, 0.5)), then saturation (xU(0, 2)), then contrast (xU(0.5, 1.5))."""
    n = len(x)
    x = x + p["brightness"].view(n, 1, 1, 1)
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * p["saturation"].view(n, 1, 1, 1) + grey
    average = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - average) * p["contrast"].view(n, 1, 1, 1) + average


def crop(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Translate each image by up to +-int(0.125 * size + 0.5) pixels, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = _shift(h), _shift(w)
    padded = F.pad(x, (sw, sw, sh, sh))
    rows = (torch.arange(h, device=x.device).view(1, h) + sh + p["dy"].view(n, 1))  # [n, h]
    cols = (torch.arange(w, device=x.device).view(1, w) + sw + p["dx"].view(n, 1))  # [n, w]
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    # advanced indexing keeps the op differentiable with respect to x
    return padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Zero one square of side int(0.5 * size + 0.5) at a random centre (clipped at borders)."""
    n, _, h, w = x.shape
    ch, cw = _cut_side(h), _cut_side(w)
    top, left = p["top"].view(n, 1, 1), p["left"].view(n, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def flip(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Mirror each image horizontally with probability 0.5."""
    return torch.where(p["mirror"].view(-1, 1, 1, 1), x.flip(3), x)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def scale(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Stretch x and y independently by factors drawn from U(1/1.2, 1.2)."""
    sx, sy = p["sx"], p["sy"]
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
    return _warp(x, theta)


def rotate(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Rotate each image by an angle drawn from U(-15, 15) degrees."""
    angle = p["angle"]
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
    return _warp(x, theta)


_OPS = {"color": color, "crop": crop, "cutout": cutout, "flip": flip, "scale": scale, "rotate": rotate}
