"""Resumable checkpoints: one torch file written atomically, read back with weights_only=True."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from distill.errors import DistillError
from distill.io.atomic import atomic_write

CHECKPOINT_FORMAT = "distill.checkpoint/1"


def save_checkpoint(path: str | Path, state: dict, config_key: str) -> Path:
    """Atomically save `state` (tensors, numbers, strings, lists, dicts) tagged with `config_key`."""
    payload = {"format": CHECKPOINT_FORMAT, "config_key": config_key, "state": state}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, config_key: str) -> dict:
    """Load a checkpoint's state; no code in the file can run. Refuses other configs and damaged files."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DistillError(f"{path} asks for more than tensors ({str(exc).splitlines()[0][:120]}); refusing to load "
                           "it: delete it to start over") from None
    except Exception as exc:
        raise DistillError(f"{path} is damaged ({exc.__class__.__name__}): delete it to start over") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or "state" not in payload:
        raise DistillError(f"{path} is not a distill checkpoint: delete it to start over")
    if payload.get("config_key") != config_key:
        raise DistillError(f"{path} was written by a run with a different config: delete it, set "
                           "distill.resume=false, or choose another paths.distill")
    return payload["state"]
