"""Finished training runs of an evaluation kept on disk, so that an interrupted evaluation resumes.

Each run's result is one small JSON file named by a digest of everything that decides it (the data, the
set's tensors, the protocol, the network, the run's index and seed, the code's commit); a later call with
the same inputs reads it instead of training that network again. Once the evaluation's records exist the
files are removed: they resume an interrupted evaluation, they do not cache a finished one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from distill.evaluate.records import git_commit
from distill.io.atomic import atomic_write_json
from distill.io.tensors import sha256_tensor


def set_digest(synthetic: dict[str, torch.Tensor] | None) -> str | None:
    """sha256 over a set's tensors (images, label_logits, lr, classes, in name order); None for no set."""
    if synthetic is None:
        return None
    return hashlib.sha256("".join(f"{k}:{sha256_tensor(v)}" for k, v in sorted(synthetic.items())).encode()).hexdigest()


class FinishedRuns:
    """The runs of one evaluation already trained, under `folder` (None: keep nothing).

    `context` is everything shared by the evaluation's runs that decides their results (JSON-serialisable);
    a run adds its own description (set kind, labels, network, index). Results are (test accuracy, lr,
    seed, seconds) tuples.
    """

    def __init__(self, folder: Path | None, context: dict) -> None:
        self.folder = None if folder is None else Path(folder)
        self.context = {**context, "commit": git_commit()}

    def _path(self, run: dict) -> Path:
        key = json.dumps([self.context, run], sort_keys=True, default=str)
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"

    def get(self, run: dict) -> tuple[float, float, int, float] | None:
        """The stored result of `run`, or None when it has not finished (or the file is unreadable)."""
        if self.folder is None:
            return None
        try:
            stored = json.loads(self._path(run).read_text())
            return float(stored["accuracy"]), float(stored["lr"]), int(stored["seed"]), float(stored["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, run: dict, result: tuple[float, float, int, float]) -> None:
        """Store `run`'s result (atomically: a kill mid-write leaves no half file)."""
        if self.folder is not None:
            accuracy, lr, seed, seconds = result
            atomic_write_json(
                self._path(run), {"run": run, "accuracy": accuracy, "lr": lr, "seed": seed, "seconds": seconds}
            )

    def forget(self, runs: list[dict]) -> None:
        """Remove the files of `runs` (the evaluation they belong to has its records)."""
        if self.folder is not None:
            for run in runs:
                self._path(run).unlink(missing_ok=True)
            try:
                self.folder.rmdir()  # only when empty: another evaluation's (or rank's) runs stay
            except OSError:
                pass
