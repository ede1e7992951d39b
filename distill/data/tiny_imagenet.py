"""Tiny ImageNet from the standard `tiny-imagenet-200` folder (val images arranged via its annotations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill.data.cache import cached, source_key
from distill.data.download import extract, fetch
from distill.data.registry import ImageData, channel_stats, register_dataset
from distill.errors import DistillError

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_FOLDER = "tiny-imagenet-200"


def _read_rgb(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as exc:
        raise DistillError(f"{path} is not a readable image ({exc.__class__.__name__})") from None
    if array.shape != (size, size, 3):
        raise DistillError(f"{path} is {array.shape[1]}x{array.shape[0]}, expected {size}x{size}")
    return array.transpose(2, 0, 1)


def class_wnids(folder: Path) -> list[str]:
    """The wnids of wnids.txt in class-index order (sorted, as ImageFolder sorts class folders)."""
    return sorted(w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip())


def read_tiny_imagenet(folder: Path, size: int = 64) -> dict[str, torch.Tensor]:
    """Decode train/<wnid>/images/*.JPEG and val/images/*.JPEG (labels from val_annotations.txt).

    Classes are numbered in sorted wnid order, as torchvision's ImageFolder (and so the reference
    code and its buffers) number them, not in wnids.txt order. Returns uint8 [N, 3, size, size]
    images and int64 labels.
    """
    wnids = class_wnids(folder)
    index = {w: i for i, w in enumerate(wnids)}
    train_x, train_y = [], []
    for wnid in wnids:
        for image in sorted((folder / "train" / wnid / "images").glob("*.JPEG")):
            train_x.append(_read_rgb(image, size))
            train_y.append(index[wnid])
    test_x, test_y = [], []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in index:
            raise DistillError(f"val_annotations.txt names class {fields[1]} missing from wnids.txt")
        test_x.append(_read_rgb(folder / "val" / "images" / fields[0], size))
        test_y.append(index[fields[1]])
    if not train_x or not test_x:
        raise DistillError(f"{folder} holds no train or val images")
    return {"train_images": torch.from_numpy(np.stack(train_x)), "train_labels": torch.tensor(train_y),
            "test_images": torch.from_numpy(np.stack(test_x)), "test_labels": torch.tensor(test_y)}


@register_dataset("tiny_imagenet")
def load_tiny_imagenet(root: Path, download: bool = False) -> ImageData:
    """Tiny ImageNet: 100,000 train / 10,000 val (used as test) colour 64x64 images, 200 classes.

    `root` may be the `tiny-imagenet-200` folder itself or the folder holding it.
    """
    folder = root if (root / "wnids.txt").is_file() else root / TINY_FOLDER
    if download and not (folder / "wnids.txt").is_file():
        extract(fetch(TINY_URL, root / "tiny-imagenet-200.zip", TINY_MD5), root)
        folder = root / TINY_FOLDER
    needed = [folder / "wnids.txt", folder / "train", folder / "val" / "val_annotations.txt", folder / "val" / "images"]
    if not all(p.exists() for p in needed):
        raise DistillError(f"tiny_imagenet: expected {TINY_FOLDER}/ with wnids.txt, train/<wnid>/images/, "
                           f"val/images/ and val/val_annotations.txt under {root}: pass dataset.download=true to fetch it")
    # "sorted": caches decoded in wnids.txt order by older versions are rebuilt
    key = source_key([folder / "wnids.txt", folder / "val" / "val_annotations.txt"]) + "-sorted"
    t = cached(folder / ".cache" / "tiny_imagenet.safetensors", key, lambda: read_tiny_imagenet(folder))
    words = {}
    if (folder / "words.txt").is_file():
        for line in (folder / "words.txt").read_text().splitlines():
            if "\t" in line:
                wnid, text = line.split("\t", 1)
                words[wnid] = text.split(",")[0]
    wnids = class_wnids(folder)
    mean, std = channel_stats(t["train_images"])
    return ImageData("tiny_imagenet", t["train_images"], t["train_labels"], t["test_images"], t["test_labels"],
                     tuple(words.get(w, w) for w in wnids), mean, std)
