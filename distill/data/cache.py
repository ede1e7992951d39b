"""Cache of decoded datasets as uint8 safetensors, keyed by the source files' identity."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch

from distill.errors import DistillError
from distill.io.tensors import load_tensors, save_tensors

CACHE_FORMAT = "distill.dataset-cache/1"


def source_key(files: list[Path]) -> str:
    """A short hash of the names, sizes and modification times of `files`."""
    parts = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def cached(cache_file: Path, key: str, decode: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Return the tensors stored in `cache_file` if its key matches, else `decode()` and store them.

    A cache that is unreadable or stale is rebuilt; a cache that cannot be written is skipped.
    """
    if cache_file.is_file():
        try:
            tensors, meta = load_tensors(cache_file)
            if meta.get("format") == CACHE_FORMAT and meta.get("source_key") == key:
                return tensors
        except DistillError:
            pass
    tensors = decode()
    try:
        save_tensors(cache_file, tensors, {"format": CACHE_FORMAT, "source_key": key})
    except DistillError:
        pass  # a read-only dataset folder still loads, just without the speed-up
    return tensors
