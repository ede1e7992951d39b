"""Safetensors files with metadata: atomic save, validated load, sha256."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from distill.errors import DistillError
from distill.io.atomic import atomic_write, atomic_write_json

MAX_HEADER_BYTES = 64 * 1024 * 1024
METADATA_KEY = "distill"


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Atomically write `tensors` (moved to CPU, made contiguous) with JSON-able `metadata` to `path`.

    The metadata is stored as ONE sorted JSON string under the key "distill": safetensors keeps
    metadata in a hash map whose order varies run to run, and identical runs must give identical bytes.
    """
    meta = {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(cpu, str(tmp), metadata=meta))


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (tensor table, metadata dict) of a safetensors file after checking its header is sane.

    Checks that the declared header fits in the file and every tensor's byte range lies inside the
    data section and matches its dtype and shape, so a lying header can never cause a huge read.
    """
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"{path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise DistillError(f"{path} is truncated ({size} bytes): delete it and re-create it")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise DistillError(f"{path} has a corrupt header (declares {header_len} bytes): delete it and re-create it")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DistillError(
                f"{path} has a corrupt header ({exc.__class__.__name__}): delete it and re-create it"
            ) from None
    if not isinstance(header, dict):
        raise DistillError(f"{path} has a corrupt header: delete it and re-create it")
    raw_meta = header.pop("__metadata__", {}) or {}
    try:
        metadata = json.loads(raw_meta[METADATA_KEY]) if METADATA_KEY in raw_meta else dict(raw_meta)
    except (TypeError, json.JSONDecodeError):
        raise DistillError(f"{path} has corrupt metadata: delete it and re-create it") from None
    data_len = size - 8 - header_len
    itemsizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            count = 1
            for dim in shape:
                if not isinstance(dim, int) or dim < 0:
                    raise ValueError
                count *= dim
            if dtype not in itemsizes or not (0 <= start <= end <= data_len) or end - start != count * itemsizes[dtype]:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise DistillError(
                f"{path}: tensor '{name}' has an invalid entry (offsets, dtype or shape): "
                "the file is corrupt, delete it and re-create it"
            ) from None
    return header, metadata


def load_tensors(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load every tensor of a validated safetensors file. Returns (tensors, metadata dict)."""
    _, metadata = read_header(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise DistillError(f"{path} could not be read ({exc}): delete it and re-create it") from None
    return tensors, metadata


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tensor(tensor: torch.Tensor) -> str:
    """Hex sha256 of a tensor's dtype, shape and bytes (CPU, contiguous)."""
    digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.detach().to("cpu").reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


VERIFIED_CACHE = ".verified.json"


def matches_sha256(path: str | os.PathLike, expected: str) -> bool:
    """Whether `path` hashes to `expected`, hashing each file version only once.

    A verified file's size and modification time go into `.verified.json` beside it; while both are
    unchanged the file is not read again (a CIFAR-10 buffer is ~13 GB, and every job used to re-read
    it). A folder that cannot be written to just hashes every time.
    """
    path = Path(path)
    cache_path = path.parent / VERIFIED_CACHE
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected}
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if cache.get(path.name) == stamp:
        return True
    if sha256_file(path) != expected:
        return False
    try:
        cache = {**(cache if isinstance(cache, dict) else {}), path.name: stamp}
        atomic_write_json(cache_path, cache)
    except DistillError:
        pass
    return True
