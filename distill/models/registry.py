"""Model registry: a name maps to a builder taking (channels, num_classes, resolution, **options)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from distill.errors import DistillError

Builder = Callable[..., nn.Module]
_BUILDERS: dict[str, Builder] = {}


def register_model(*names: str) -> Callable[[Builder], Builder]:
    """Decorator: register a builder under one or more names."""

    def decorate(builder: Builder) -> Builder:
        for name in names:
            _BUILDERS[name] = builder
        return builder

    return decorate


def model_names() -> list[str]:
    """Sorted names of every registered model."""
    _import_zoo()
    return sorted(_BUILDERS)


def build_model(
    name: str,
    channels: int,
    num_classes: int,
    resolution: int | tuple[int, int],
    seed: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    **options,
) -> nn.Module:
    """Build model `name` for images [*, channels, H, W] and `num_classes` outputs.

    `seed` makes the random initialisation reproducible (drawn from a private generator state, the
    global RNG is restored afterwards). Unknown names raise a DistillError listing the valid ones;
    an image size the architecture cannot take raises one naming the size.
    """
    _import_zoo()
    if name not in _BUILDERS:
        raise DistillError(f"unknown model '{name}': choose one of {', '.join(sorted(_BUILDERS))}")
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = _BUILDERS[name](channels=channels, num_classes=num_classes, resolution=size, **options)
        except (RuntimeError, ValueError) as exc:
            raise DistillError(
                f"model '{name}' cannot take {channels}x{size[0]}x{size[1]} images ({exc}): "
                "choose another model or resolution"
            ) from None
        except TypeError as exc:
            raise DistillError(f"model '{name}': bad option ({exc})") from None
    return model.to(device=device, dtype=dtype)


@dataclass
class ModelSpec:
    """A registered model name and its builder options (the config's `model` section).

    options are the builder's keyword arguments: width, depth, norm, act, pool for the ConvNets;
    {} takes the builder's defaults (ConvNet: width 128, depth 3, instance norm).
    """

    name: str = "convnet"
    options: dict[str, Any] = field(default_factory=dict)

    def build(
        self,
        channels: int,
        num_classes: int,
        resolution: int | tuple[int, int],
        seed: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> nn.Module:
        """`build_model(self.name, ..., **self.options)`."""
        return build_model(
            self.name, channels, num_classes, resolution, seed=seed, device=device, dtype=dtype, **dict(self.options)
        )


def feature_count(features: nn.Module, channels: int, resolution: tuple[int, int]) -> int:
    """Number of values `features` outputs for one image, found with a dummy forward pass."""
    with torch.no_grad():
        out = features(torch.zeros(1, channels, *resolution))
    if out.numel() == 0:
        raise ValueError("the feature map shrinks to nothing")
    return out.numel()


def _import_zoo() -> None:
    from distill.models import classic, convnet, resnet  # noqa: F401
