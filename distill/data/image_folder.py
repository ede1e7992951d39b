"""A user's own images in class folders: `root/train/<class>/*.png` and `root/test/<class>/*.png`.

The layout torchvision's ImageFolder reads, one folder per split. Classes are numbered in sorted folder
order and both splits must hold the same classes. Every image must have the same size; images are
greyscale when all of them are, else RGB; 8 bits per channel (16-bit and float images are refused: convert
them first). Decoded images are cached in `root/.cache`, keyed by the files' paths, sizes and modification
times. The folder's content is part of the dataset's identity
(`ImageData.notes["content"]`, and so of buffer and run fingerprints): buffers made from other images are
refused, not reused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from distill.data.cache import cached
from distill.data.registry import ImageData, channel_stats, register_dataset
from distill.errors import DistillError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GREY_MODES = ("1", "L", "LA")
WIDE_MODES = ("I", "F")  # 32-bit integer and float pixels (PIL reads 16-bit images as modes I;16*)


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class folders in `split_dir` (hidden folders left out)."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """Sorted image files (by suffix, any case) directly inside `folder`."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _listing(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """(class names, split -> [(file, class index)]) for root/train and root/test; DistillError naming the
    fix when the layout is wrong."""
    layout = f"expected {root}/train/<class>/<image> and {root}/test/<class>/<image> (set dataset.root)"
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DistillError(f"image_folder: {layout}")
    classes = class_folders(root / "train")
    if len(classes) < 2:
        raise DistillError(
            f"image_folder: {root}/train holds {len(classes)} class folders, at least 2 needed: {layout}"
        )
    test_classes = class_folders(root / "test")
    if test_classes != classes:
        only = sorted(set(classes) ^ set(test_classes))
        raise DistillError(
            f"image_folder: train and test hold different classes (e.g. '{only[0]}'): give both the same"
        )
    files = {}
    for split in ("train", "test"):
        per_class = {name: image_files(root / split / name) for name in classes}
        files[split] = [(f, k) for k, name in enumerate(classes) for f in per_class[name]]
        empty = [name for name in classes if not per_class[name]]
        if empty:
            raise DistillError(f"image_folder: {root}/{split}/{empty[0]} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return classes, files


def _read(path: Path) -> tuple[np.ndarray, str]:
    """An image file as uint8 [H, W, C] in its own mode's channels (1 or 3) and that mode."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode = image.mode
            wide = mode in WIDE_MODES or mode.startswith("I;16")
            if not wide:
                grey = mode in GREY_MODES
                array = np.asarray(image.convert("L" if grey else "RGB"), dtype=np.uint8)
    except Exception as exc:
        raise DistillError(f"{path} is not a readable image ({exc.__class__.__name__})") from None
    if wide:
        # converting would clip, not rescale, their values to 0..255
        raise DistillError(f"{path} has {mode} pixels, not 8 bits per channel: convert the images to 8-bit first")
    return (array[:, :, None] if grey else array), ("L" if grey else "RGB")


def read_image_folder(files: dict[str, list[tuple[Path, int]]]) -> dict[str, torch.Tensor]:
    """Decode every file of `files` (split -> [(file, class index)]): uint8 images [N, C, H, W] (C = 1 when
    every image is greyscale, else 3) and int64 labels [N] per split."""
    decoded = {split: [_read(f) for f, _ in pairs] for split, pairs in files.items()}
    first_file = files["train"][0][0]
    shape = decoded["train"][0][0].shape[:2]
    for split, images in decoded.items():
        for (array, _), (path, _) in zip(images, files[split]):
            if array.shape[:2] != shape:
                raise DistillError(
                    f"{path} is {array.shape[1]}x{array.shape[0]}, {first_file} is {shape[1]}x{shape[0]}: "
                    "every image must have one size (resize them first)"
                )
    grey = all(mode == "L" for images in decoded.values() for _, mode in images)
    tensors = {}
    for split, images in decoded.items():
        arrays = [a if grey else (np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a) for a, _ in images]
        tensors[f"{split}_images"] = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())
        tensors[f"{split}_labels"] = torch.tensor([k for _, k in files[split]], dtype=torch.int64)
    return tensors


def listing_key(root: Path, files: list[Path]) -> str:
    """A short hash of the files' paths under `root`, sizes and modification times (to the nanosecond: an image
    edited within the same second must not load from a stale cache)."""
    parts = [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def content_digest(tensors: dict[str, torch.Tensor], classes: list[str]) -> str:
    """A short sha256 of the decoded images, labels and class names: the dataset's identity."""
    digest = hashlib.sha256("\n".join(classes).encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@register_dataset("image_folder")
def load_image_folder(root: Path, download: bool = False) -> ImageData:
    """The images under `root` (train/<class>/ and test/<class>/, see the module docstring) as uint8 tensors,
    classes in sorted folder order. `download` is ignored: the images are the user's own."""
    root = Path(root)
    classes, files = _listing(root)
    key = listing_key(root, [f for split in ("train", "test") for f, _ in files[split]])
    tensors = cached(root / ".cache" / "image_folder.safetensors", key, lambda: read_image_folder(files))
    mean, std = channel_stats(tensors["train_images"])
    notes = {"root": str(root.resolve()), "content": content_digest(tensors, classes)}
    return ImageData(
        "image_folder",
        tensors["train_images"],
        tensors["train_labels"],
        tensors["test_images"],
        tensors["test_labels"],
        tuple(classes),
        mean,
        std,
        notes,
    )
