"""MNIST and Fashion-MNIST from the standard idx (or idx.gz) files."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import torch

from distill.data.cache import cached, source_key
from distill.data.download import fetch, md5_file
from distill.data.registry import ImageData, channel_stats, register_dataset
from distill.errors import DistillError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# md5 of each file's decompressed idx bytes: the same whoever compressed it (Debian re-compresses, so
# its .gz files differ from the publisher's byte for byte but hold the same images)
FASHION_PAYLOAD_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MAX_IDX_BYTES = 1 << 31


def parse_idx(data: bytes, expected_dims: int, source: str) -> np.ndarray:
    """Decode one idx file's bytes into a uint8 array of `expected_dims` dimensions.

    Checks the magic number (0x00 0x00 0x08 = unsigned byte, then the dimension count) and that the
    declared dimensions match the payload length exactly, so a truncated file is always refused.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != expected_dims:
        raise DistillError(f"{source} is not an idx file of {expected_dims}-d unsigned bytes (wrong magic): "
                           "re-download it (dataset.download=true)")
    header = 4 + 4 * expected_dims
    if len(data) < header:
        raise DistillError(f"{source} is truncated: re-download it (dataset.download=true)")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(expected_dims)]
    count, extent = 1, 1
    for dim in dims:
        count *= dim
        extent *= max(dim, 1)  # numpy refuses shapes whose non-zero extent is absurd, even when empty
    if extent > MAX_IDX_BYTES:
        raise DistillError(f"{source} declares impossible dimensions {dims}: re-download it (dataset.download=true)")
    if len(data) != header + count:
        raise DistillError(f"{source} is truncated or padded (declares {dims}, holds {len(data) - header} bytes): "
                           "re-download it (dataset.download=true)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_bytes(path: Path) -> bytes:
    """The idx bytes of an idx or idx.gz file (decompressing at most MAX_IDX_BYTES)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                data = handle.read(MAX_IDX_BYTES + 1)
        else:
            data = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DistillError(f"{path} cannot be decompressed ({exc}): re-download it (dataset.download=true)") from None
    if len(data) > MAX_IDX_BYTES:
        raise DistillError(f"{path} decompresses to more than {MAX_IDX_BYTES} bytes: not a dataset file")
    return data


def verify_idx(path: Path, data: bytes, file_md5: str | None, payload_md5: str | None) -> None:
    """Accept `path` (whose idx bytes are `data`) when its own md5 is the publisher's `file_md5` or its
    decompressed bytes' md5 is `payload_md5`; with neither known, accept it. Else a one-line DistillError."""
    if file_md5 is None and payload_md5 is None:
        return
    if payload_md5 is not None and hashlib.md5(data, usedforsecurity=False).hexdigest() == payload_md5:
        return
    if file_md5 is not None and md5_file(path) == file_md5:
        return
    expected = " or ".join(
        f"{what} md5 {md5}" for what, md5 in (("file", file_md5), ("decompressed", payload_md5)) if md5
    )
    raise DistillError(f"{path} fails its checksum ({expected}): re-download it (dataset.download=true)")


def find_idx_files(root: Path) -> list[Path] | None:
    """The four idx files under `root` (plain or .gz), or None if any is missing."""
    found = []
    for stem in IDX_FILES:
        for candidate in (root / stem, root / f"{stem}.gz"):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            return None
    return found


def load_idx_dataset(
    name: str,
    root: Path,
    class_names: tuple[str, ...],
    checksums: dict[str, str] | None,
    payload_checksums: dict[str, str] | None = None,
) -> ImageData:
    """Decode (or read from cache) the four idx files under `root` into an ImageData.

    `checksums`: md5 of the published files by file name; `payload_checksums`: md5 of the decompressed
    idx bytes by file stem; a file passes when either matches (see `verify_idx`)."""
    files = find_idx_files(root)
    if files is None:
        raise DistillError(f"{name}: expected {', '.join(f + '[.gz]' for f in IDX_FILES)} in {root}")

    def decode() -> dict[str, torch.Tensor]:
        arrays = []
        for f, dims in zip(files, (3, 1, 3, 1)):
            data = read_idx_bytes(f)
            verify_idx(f, data, (checksums or {}).get(f.name), (payload_checksums or {}).get(f.name.removesuffix(".gz")))
            arrays.append(parse_idx(data, dims, str(f)))
        if arrays[0].shape[0] != arrays[1].shape[0] or arrays[2].shape[0] != arrays[3].shape[0]:
            raise DistillError(f"{name}: image and label counts differ in {root}: re-download (dataset.download=true)")
        return {"train_images": torch.from_numpy(arrays[0].copy())[:, None],
                "train_labels": torch.from_numpy(arrays[1].astype(np.int64)),
                "test_images": torch.from_numpy(arrays[2].copy())[:, None],
                "test_labels": torch.from_numpy(arrays[3].astype(np.int64))}

    t = cached(_cache_dir(root) / f"{name}.safetensors", source_key(files), decode)
    mean, std = channel_stats(t["train_images"])
    return ImageData(name, t["train_images"], t["train_labels"], t["test_images"], t["test_labels"], class_names, mean, std)


def _cache_dir(root: Path) -> Path:
    # Debian's folder is read-only for users: cache beside the project's data instead.
    return root / ".cache" if root != FASHION_DEBIAN_DIR else Path("data") / "fashion_mnist" / ".cache"


@register_dataset("mnist")
def load_mnist(root: Path, download: bool = False) -> ImageData:
    """MNIST: 60,000 train / 10,000 test grey 28x28 digits from idx files under `root`."""
    if download:
        for filename, md5 in MNIST_MD5.items():
            fetch(MNIST_URL + filename, root / filename, md5)
    elif find_idx_files(root) is None:
        raise DistillError(f"mnist: expected {', '.join(f + '.gz' for f in IDX_FILES)} in {root}: "
                           "pass dataset.download=true to fetch them")
    return load_idx_dataset("mnist", root, tuple(str(i) for i in range(10)), MNIST_MD5)


@register_dataset("fashion_mnist")
def load_fashion_mnist(root: Path, download: bool = False) -> ImageData:
    """Fashion-MNIST: 60,000 / 10,000 grey 28x28 clothing images from idx files.

    Looks in `root`, then in Debian's `/usr/share/datasets/fashion-mnist`, then downloads if asked.
    """
    if find_idx_files(root) is None and find_idx_files(FASHION_DEBIAN_DIR) is not None:
        root = FASHION_DEBIAN_DIR
    if download and find_idx_files(root) is None:
        for filename, md5 in FASHION_MD5.items():
            fetch(FASHION_URL + filename, root / filename, md5)
    if find_idx_files(root) is None:
        raise DistillError(f"fashion_mnist: expected {', '.join(f + '.gz' for f in IDX_FILES)} in {root}: "
                           "run `apt-get install dataset-fashion-mnist` or pass dataset.download=true")
    # Debian re-compresses the .gz files (other md5 than the publisher's): the decompressed md5 vouches for them
    return load_idx_dataset("fashion_mnist", root, FASHION_CLASSES, FASHION_MD5, FASHION_PAYLOAD_MD5)
