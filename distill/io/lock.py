"""An exclusive lock on an output folder, so two runs can never write the same files."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.errors import DistillError


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold `<folder>/.lock` (flock, released by the OS even if the process is killed) while the block runs."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "a+")
    except OSError as exc:
        raise DistillError(
            f"cannot write into {folder} ({exc.strerror or exc}): choose a writable output folder"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise DistillError(
            f"another run (pid {owner}) is writing {folder}: wait for it to finish or choose another output folder"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
