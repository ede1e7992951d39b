"""Image grids for people: one row per class (one image per class: a single row)."""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange

from distill.io.atomic import atomic_write


def save_grid(
    path: str | Path, pixels: torch.Tensor, num_classes: int, max_per_class: int = 10, max_classes: int = 20
) -> Path:
    """Save class-major pixels [num_classes * ipc, C, H, W] in [0, 1] as a PNG grid: classes as rows, or
    as one row of classes when there is one image per class. Returns the path."""
    from matplotlib.image import imsave  # no pyplot: the caller's matplotlib backend stays as it was

    grid = rearrange(pixels.detach().cpu().float(), "(k n) c h w -> k n c h w", k=num_classes)
    grid = grid[:max_classes, :max_per_class]
    grid = torch.nn.functional.pad(grid, (1, 1, 1, 1), value=1.0)
    layout = "k n c h w -> (n h) (k w) c" if grid.shape[1] == 1 else "k n c h w -> (k h) (n w) c"
    image = rearrange(grid, layout).clamp(0, 1).numpy()
    cmap = "gray" if image.shape[2] == 1 else None
    image = image[..., 0] if image.shape[2] == 1 else image
    scale = max(1, 512 // max(image.shape[:2]))  # small images (8 px digits) get enlarged to be seen
    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    return atomic_write(path, lambda tmp: imsave(tmp, image, cmap=cmap, vmin=0, vmax=1, format="png"))
