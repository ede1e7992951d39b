"""Mapping uint8 pixels to the model's input space: per-channel standardisation or ZCA whitening."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from kornia.enhance import linear_transform, zca_mean

from distill.errors import DistillError


# The official code's fixed per-channel constants for runs without ZCA (its MTT-style CIFAR and Tiny
# ImageNet runs normalise with these, not with statistics measured on the data).
_CIFAR = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
REFERENCE_STATISTICS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": _CIFAR, "cifar100": _CIFAR, "tiny_imagenet": _IMAGENET}
"""Dataset name -> (mean, std) per channel, for `normalisation=reference`."""


@dataclass(frozen=True)
class Preprocessor:
    """A fitted, invertible pixel transform.

    kind "standardize": x -> (x/255 - mean) / std per channel (mean, std: [C]).
    kind "zca": x -> ((x/255).flatten() - zca_mean) @ zca_matrix, as in the reference (kornia's ZCA,
    fitted on the whole training split; pixels are only scaled to [0, 1] before whitening).
    """

    kind: str
    mean: torch.Tensor
    std: torch.Tensor
    zca_mean: torch.Tensor | None = None
    zca_matrix: torch.Tensor | None = None
    zca_inverse: torch.Tensor | None = None
    zca_eps: float = 0.0
    statistics: str = "measured"  # where mean / std come from: "measured" on the data, or "reference" constants

    def apply(self, images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """uint8 [N, C, H, W] (or float in [0, 1]) -> float32 [N, C, H, W] in model-input space."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        images = images.float()
        if self.kind == "standardize":
            return (images - self.mean.view(1, -1, 1, 1).to(images)) / self.std.view(1, -1, 1, 1).to(images)
        outs = []
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            flat = linear_transform(part.reshape(len(part), -1), self.zca_matrix.to(part), self.zca_mean.to(part))
            outs.append(flat.reshape(part.shape))
        return torch.cat(outs) if outs else images

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Model-input space [N, C, H, W] -> pixels in [0, 1] (clamped), for pictures."""
        x = x.detach().float()
        if self.kind == "standardize":
            pixels = x * self.std.view(1, -1, 1, 1).to(x) + self.mean.view(1, -1, 1, 1).to(x)
        else:
            flat = x.reshape(len(x), -1) @ self.zca_inverse.to(x) + self.zca_mean.to(x)
            pixels = flat.reshape(x.shape)
        return pixels.clamp(0.0, 1.0)

    def state(self) -> dict[str, torch.Tensor]:
        """The statistics as named tensors (for saving next to buffers and artifacts)."""
        out = {"mean": self.mean, "std": self.std}
        if self.kind == "zca":
            out.update(zca_mean=self.zca_mean, zca_matrix=self.zca_matrix, zca_inverse=self.zca_inverse)
        return out

    def fingerprint(self) -> dict:
        """kind, eps and a sha256 over the statistics: equal fingerprints mean identical transforms."""
        digest = hashlib.sha256(self.kind.encode())
        for name, tensor in sorted(self.state().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return {"kind": self.kind, "zca_eps": self.zca_eps, "statistics": self.statistics,
                "sha256": digest.hexdigest()[:16]}

    @staticmethod
    def from_state(kind: str, state: dict[str, torch.Tensor], zca_eps: float = 0.0,
                   statistics: str = "measured") -> "Preprocessor":
        """Rebuild a Preprocessor saved with `state()`."""
        if kind not in ("standardize", "zca"):
            raise DistillError(f"unknown preprocessing kind '{kind}': use standardize or zca")
        return Preprocessor(kind, state["mean"], state["std"], state.get("zca_mean"), state.get("zca_matrix"),
                            state.get("zca_inverse"), zca_eps, statistics)


def fit_preprocessor(train_images: torch.Tensor, zca: bool, zca_eps: float = 0.1,
                     fixed_statistics: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> Preprocessor:
    """Fit on uint8 training images [N, C, H, W]: ZCA (kornia, unbiased covariance, `zca_eps`) or standardisation.

    `fixed_statistics` = (mean, std) per channel replaces the measured ones in standardisation
    (e.g. `REFERENCE_STATISTICS[name]`); ZCA has no use for them.
    """
    # float64 statistics: a float32 reduction's result depends on the thread count, and the
    # statistics end up in the dataset fingerprint that buffers and artifacts are checked against
    x = train_images.double().div(255.0)
    if fixed_statistics is not None:
        if zca:
            raise DistillError("fixed normalisation statistics apply to standardisation only, not to ZCA")
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in fixed_statistics)
        if len(mean) != x.shape[1] or len(std) != x.shape[1]:
            raise DistillError(f"fixed statistics have {len(mean)} channels, the images {x.shape[1]}")
        return Preprocessor("standardize", mean, std, statistics="reference")
    mean = x.mean(dim=(0, 2, 3)).float()
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-8).float()
    if not zca:
        return Preprocessor("standardize", mean, std)
    flat = x.reshape(len(x), -1)  # float64 for a stable decomposition; stored as float32
    matrix, vector, inverse = zca_mean(flat, dim=0, unbiased=True, eps=zca_eps, return_inverse=True)
    return Preprocessor("zca", mean, std, vector.float(), matrix.float(), inverse.float(), zca_eps)
