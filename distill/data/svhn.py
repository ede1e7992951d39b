"""SVHN (cropped digits) from the official train_32x32.mat / test_32x32.mat files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill.data.cache import cached, source_key
from distill.data.download import fetch, verify_md5
from distill.data.registry import ImageData, channel_stats, register_dataset
from distill.errors import DistillError

SVHN_FILES = {
    "train_32x32.mat": ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test_32x32.mat": ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
}


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A MATLAB v5 file with X [32, 32, 3, N] and y [N, 1] (label 10 means digit 0) -> (images, labels)."""
    from scipy.io import loadmat  # MATLAB files hold no code; scipy parses them without pickle

    try:
        mat = loadmat(path, variable_names=["X", "y"])
        x, y = mat["X"], mat["y"]
    except Exception as exc:
        raise DistillError(f"{path} is not a readable SVHN .mat file ({exc.__class__.__name__}): re-download it") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise DistillError(f"{path}: X must be [32, 32, 3, N] with N labels, got {x.shape} / {y.shape}")
    labels = y.reshape(-1).astype(np.int64) % 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8), labels


@register_dataset("svhn")
def load_svhn(root: Path, download: bool = False, checksums: bool = True) -> ImageData:
    """SVHN: 73,257 train / 26,032 test colour 32x32 house-number digits, 10 classes."""
    files = [root / name for name in SVHN_FILES]
    for f in files:
        url, md5 = SVHN_FILES[f.name]
        if download:
            fetch(url, f, md5)
        if not f.is_file():
            raise DistillError(f"svhn: expected {', '.join(SVHN_FILES)} in {root}: pass dataset.download=true to fetch them")

    def decode() -> dict[str, torch.Tensor]:
        if checksums:
            for f in files:
                verify_md5(f, SVHN_FILES[f.name][1], "re-download it (dataset.download=true)")
        (xtr, ytr), (xte, yte) = read_svhn_mat(files[0]), read_svhn_mat(files[1])
        return {"train_images": torch.from_numpy(xtr), "train_labels": torch.from_numpy(ytr),
                "test_images": torch.from_numpy(xte), "test_labels": torch.from_numpy(yte)}

    t = cached(root / ".cache" / "svhn.safetensors", source_key(files), decode)
    mean, std = channel_stats(t["train_images"])
    return ImageData("svhn", t["train_images"], t["train_labels"], t["test_images"], t["test_labels"],
                     tuple(str(i) for i in range(10)), mean, std)
