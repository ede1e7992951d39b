"""CIFAR-10 / CIFAR-100 from the python (pickle) or binary versions, without executing pickles."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from distill.data.cache import cached, source_key
from distill.data.download import extract, fetch, verify_md5
from distill.data.registry import ImageData, channel_stats, register_dataset
from distill.errors import DistillError

CIFAR10 = {
    "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "archive_md5": "c58f30108f718f92721af3b95e74349a",
    "folder": "cifar-10-batches-py",
    "train": {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
              "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
              "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb"},
    "test": {"test_batch": "40351d587109b95175f43aff81a1287e"},
    "label_key": "labels",
    "binary_folder": "cifar-10-batches-bin",
    "binary_train": [f"data_batch_{i}.bin" for i in range(1, 6)],
    "binary_test": ["test_batch.bin"],
    "label_bytes": 1,
}
CIFAR100 = {
    "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "archive_md5": "eb9058c3a382ffc7106e4002c42a8d85",
    "folder": "cifar-100-python",
    "train": {"train": "16019d7e3df5f24257cddd939b257f8d"},
    "test": {"test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
    "label_key": "fine_labels",
    "binary_folder": "cifar-100-binary",
    "binary_train": ["train.bin"],
    "binary_test": ["test.bin"],
    "label_bytes": 2,  # coarse label, then fine label
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MAX_PICKLE_BYTES = 1 << 30


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers, and refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def safe_unpickle(data: bytes, source: str) -> object:
    """Unpickle `data` allowing numpy arrays only; anything else is a DistillError."""
    try:
        return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DistillError(f"{source} is not a plain CIFAR pickle ({exc}); refusing to load it") from None
    except Exception as exc:  # malformed streams raise many types
        raise DistillError(f"{source} is corrupt ({exc.__class__.__name__}): re-download it (dataset.download=true)") from None


def read_cifar_pickle(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch file -> (uint8 images [N, 3, 32, 32], int64 labels [N])."""
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise DistillError(f"{path} is larger than any CIFAR batch: not a dataset file")
    entry = safe_unpickle(path.read_bytes(), str(path))
    if not isinstance(entry, dict):
        raise DistillError(f"{path} does not hold a CIFAR batch dict")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    data, labels = entry.get("data"), entry.get(label_key)
    if not isinstance(data, np.ndarray) or labels is None or data.ndim != 2 or data.shape[1] != 3072 \
            or len(labels) != data.shape[0]:
        raise DistillError(f"{path} lacks a [N, 3072] 'data' array with matching '{label_key}'")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def read_cifar_binary(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR binary file (records of label byte(s) + 3072 pixels) -> (images, labels)."""
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + 3072
    if raw.size == 0 or raw.size % record:
        raise DistillError(f"{path} is truncated ({raw.size} bytes, not a multiple of {record}): re-download it")
    rows = raw.reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), rows[:, label_bytes - 1].astype(np.int64)


def load_cifar(name: str, spec: dict, root: Path, download: bool, num_classes: int,
               class_names: tuple[str, ...], checksums: bool = True) -> ImageData:
    """Load CIFAR from `root`: the python folder if present, else the binary folder.

    `checksums=False` skips the publishers' md5 checks (for hand-made files).
    """
    python_dir, binary_dir = root / spec["folder"], root / spec["binary_folder"]
    if download and not python_dir.is_dir():
        archive = fetch(spec["url"], root / Path(spec["url"]).name, spec["archive_md5"])
        extract(archive, root)
    if python_dir.is_dir():
        splits = {s: [python_dir / f for f in spec[s]] for s in ("train", "test")}
        md5 = {f: spec[s][f] for s in ("train", "test") for f in spec[s]} if checksums else {}

        def parse(f: Path) -> tuple[np.ndarray, np.ndarray]:
            verify_md5(f, md5.get(f.name), "re-download it (dataset.download=true)")
            return read_cifar_pickle(f, spec["label_key"])
    elif binary_dir.is_dir():
        splits = {s: [binary_dir / f for f in spec[f"binary_{s}"]] for s in ("train", "test")}

        def parse(f: Path) -> tuple[np.ndarray, np.ndarray]:
            return read_cifar_binary(f, spec["label_bytes"])
    else:
        raise DistillError(f"{name}: expected {python_dir} (python version) or {binary_dir} (binary version): "
                           "pass dataset.download=true to fetch it")

    def read(split: str) -> tuple[np.ndarray, np.ndarray]:
        parts = [parse(f) for f in splits[split]]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def decode() -> dict[str, torch.Tensor]:
        (xtr, ytr), (xte, yte) = read("train"), read("test")
        return {"train_images": torch.from_numpy(xtr), "train_labels": torch.from_numpy(ytr),
                "test_images": torch.from_numpy(xte), "test_labels": torch.from_numpy(yte)}

    files = splits["train"] + splits["test"]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DistillError(f"{name}: missing {missing[0]}: re-download it (dataset.download=true)")
    t = cached(root / ".cache" / f"{name}.safetensors", source_key(files), decode)
    mean, std = channel_stats(t["train_images"])
    return ImageData(name, t["train_images"], t["train_labels"], t["test_images"], t["test_labels"],
                     class_names, mean, std)


@register_dataset("cifar10")
def load_cifar10(root: Path, download: bool = False) -> ImageData:
    """CIFAR-10: 50,000 / 10,000 colour 32x32 images, 10 classes."""
    return load_cifar("cifar10", CIFAR10, root, download, 10, CIFAR10_CLASSES)


@register_dataset("cifar100")
def load_cifar100(root: Path, download: bool = False) -> ImageData:
    """CIFAR-100: 50,000 / 10,000 colour 32x32 images, 100 fine classes."""
    return load_cifar("cifar100", CIFAR100, root, download, 100, tuple(f"class_{i}" for i in range(100)))
