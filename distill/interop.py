"""Interop with the field's artifacts: the official code's saved sets, and sets as plain PNG folders.

The official DATM / MTT code saves a distilled set as `images_best.pt` (images [N, C, H, W] in its
model-input space: ZCA-whitened, or standardised), `labels_best.pt` (DATM: learned label logits
[N, K]; MTT: class indices [N]) and `lr_best.pt` (the learned student lr). Those files are read
weights-only (no code in them can run).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from distill.data.preprocess import Preprocessor
from distill.errors import DistillError

OFFICIAL_FILES = ("images_best.pt", "labels_best.pt", "lr_best.pt")


def _load_tensor(path: Path) -> torch.Tensor:
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DistillError(f"{path} not found: an official set is a folder with {', '.join(OFFICIAL_FILES)}") from None
    except pickle.UnpicklingError as exc:
        raise DistillError(
            f"{path} asks for more than tensors ({str(exc).splitlines()[0][:120]}); refusing to load it"
        ) from None
    except Exception as exc:
        raise DistillError(f"{path} is not a readable torch file ({type(exc).__name__})") from None
    if not isinstance(value, torch.Tensor):
        raise DistillError(f"{path} holds a {type(value).__name__}, expected a tensor")
    return value


def is_official_set(path: str | Path) -> bool:
    """Whether `path` is a folder holding the official code's saved set."""
    return Path(path).is_dir() and (Path(path) / OFFICIAL_FILES[0]).is_file()


def import_official_set(
    folder: str | Path, num_classes: int, channels: int, resolution: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """Read an official set from `folder` and check it against the dataset's shape.

    Returns images [N, C, H, W] float32, label_logits [N, K] (one-hot for MTT's class indices), lr [],
    classes [N] (the labels' argmax; the official sets are class-major with equal counts per class).
    The images stay in the space the official code trained in: evaluate them with the same
    preprocessing (e.g. `dataset.zca=true dataset.val_per_class=0` for DATM's ZCA sets).
    """
    folder = Path(folder)
    images, labels, lr = (_load_tensor(folder / name) for name in OFFICIAL_FILES)
    if images.ndim != 4 or tuple(images.shape[1:]) != (channels, *resolution) or not images.is_floating_point():
        raise DistillError(
            f"{folder / OFFICIAL_FILES[0]} holds {str(images.dtype).replace('torch.', '')} "
            f"{tuple(images.shape)}, expected float [N, {channels}, {resolution[0]}, {resolution[1]}]"
        )
    n = len(images)
    if labels.ndim == 1 and not labels.is_floating_point():
        if len(labels) != n or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise DistillError(
                f"{folder / OFFICIAL_FILES[1]}: {len(labels)} class indices in "
                f"[{int(labels.min())}, {int(labels.max())}], expected {n} in [0, {num_classes})"
            )
        logits = torch.nn.functional.one_hot(labels.long(), num_classes).float()
    elif labels.ndim == 2 and labels.is_floating_point():
        if tuple(labels.shape) != (n, num_classes):
            raise DistillError(
                f"{folder / OFFICIAL_FILES[1]} holds label logits {tuple(labels.shape)}, expected "
                f"({n}, {num_classes}): another dataset's set?"
            )
        logits = labels.float()
    else:
        raise DistillError(
            f"{folder / OFFICIAL_FILES[1]} holds {str(labels.dtype).replace('torch.', '')} "
            f"{tuple(labels.shape)}: expected label logits [N, K] or class indices [N]"
        )
    if lr.numel() != 1 or not float(lr.reshape(())) > 0:
        raise DistillError(f"{folder / OFFICIAL_FILES[2]} must hold one positive learning rate")
    if not (torch.isfinite(images).all() and torch.isfinite(logits).all()):
        raise DistillError(f"{folder} holds non-finite images or labels")
    return {
        "images": images.float().contiguous(),
        "label_logits": logits.contiguous(),
        "lr": lr.detach().float().reshape(()),
        "classes": logits.argmax(1),
    }


def _fresh_folder(folder: str | Path, overwrite: bool) -> Path:
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise DistillError(f"{folder} exists and is not empty: choose another folder or pass overwrite=True")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def export_official_set(synthetic: dict[str, torch.Tensor], folder: str | Path, overwrite: bool = False) -> Path:
    """Write a set as the official code's images_best.pt, labels_best.pt (logits), lr_best.pt in `folder`."""
    folder = _fresh_folder(folder, overwrite)
    torch.save(synthetic["images"].detach().cpu(), folder / OFFICIAL_FILES[0])
    torch.save(synthetic["label_logits"].detach().cpu(), folder / OFFICIAL_FILES[1])
    torch.save(synthetic["lr"].detach().cpu().reshape(()), folder / OFFICIAL_FILES[2])
    return folder


def export_image_folder(
    synthetic: dict[str, torch.Tensor],
    preprocessor: Preprocessor,
    folder: str | Path,
    class_names: list[str] | tuple[str, ...] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the set's images as PNGs in class folders (`folder/<class>/<index>.png`, ImageFolder layout),
    mapped back to pixels with `preprocessor` (clamped to [0, 255])."""
    from PIL import Image

    folder = _fresh_folder(folder, overwrite)
    pixels = (preprocessor.invert(synthetic["images"]) * 255).round().to(torch.uint8).cpu()
    for index, (image, cls) in enumerate(zip(pixels, synthetic["classes"].tolist())):
        name = str(class_names[cls]) if class_names is not None else f"{cls:03d}"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        (folder / safe).mkdir(exist_ok=True)
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array.astype(np.uint8)).save(
            folder / safe / f"{index:05d}.png"
        )
    return folder
