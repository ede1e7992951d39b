"""Fetching dataset files from their official addresses, with checksum verification."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from distill.errors import DistillError
from distill.io.atomic import atomic_path


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file (the checksum the dataset publishers give)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str | None, how_to_fix: str) -> None:
    """Raise a DistillError if `path`'s md5 differs from `expected` (None skips the check)."""
    if expected is not None and md5_file(path) != expected:
        raise DistillError(f"{path} fails its checksum (md5 should be {expected}): {how_to_fix}")


def fetch(url: str, destination: Path, md5: str | None) -> Path:
    """Download `url` to `destination` atomically unless a copy with the right md5 is there."""
    if destination.is_file() and (md5 is None or md5_file(destination) == md5):
        return destination
    try:
        with atomic_path(destination) as tmp:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            verify_md5(tmp, md5, f"the download from {url} is corrupt; try again")
    except OSError as exc:
        raise DistillError(f"could not download {url} ({exc}); fetch it by hand into {destination.parent}") from None
    return destination


def extract(archive: Path, into: Path) -> None:
    """Unpack a .tar.gz or .zip archive into `into`, refusing members that escape it."""
    into = into.resolve()
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as handle:
            for member in handle.namelist():
                _inside(into, member)
            handle.extractall(into)
    else:
        with tarfile.open(archive) as handle:
            for member in handle.getmembers():
                _inside(into, member.name)
                if not (member.isfile() or member.isdir()):
                    raise DistillError(f"{archive} holds a link or device '{member.name}': refusing to extract")
            handle.extractall(into)


def _inside(root: Path, member: str) -> None:
    if not (root / member).resolve().is_relative_to(root):
        raise DistillError(f"archive member '{member}' would be written outside {root}: refusing to extract")
