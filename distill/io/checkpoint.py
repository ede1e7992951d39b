"""Resumable checkpoints: one torch file written atomically, read back with weights_only=True."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from distill.errors import DistillError
from distill.io.atomic import atomic_write

CHECKPOINT_FORMAT = "distill.checkpoint/1"


def save_checkpoint(path: str | Path, state: dict, config_key: str, identity: dict | None = None) -> Path:
    """Atomically save `state` (tensors, numbers, strings, lists, dicts) tagged with `config_key` (and the
    `identity` it hashes, so that a refused resume can name what differs)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config_key": config_key,
        "state": state,
        "identity": json.dumps(identity, sort_keys=True) if identity is not None else None,
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def describe_difference(saved: dict, current: dict, limit: int = 3) -> str:
    """'a.b: 1 here 2, ...' for the first `limit` flattened keys whose values differ."""
    old, new = _flatten(saved), _flatten(current)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} in the checkpoint, {new.get(k)!r} now" for k in keys[:limit])


def load_checkpoint(path: str | Path, config_key: str, identity: dict | None = None) -> dict:
    """Load a checkpoint's state; no code in the file can run. Refuses other settings (naming what differs
    when both sides have an `identity`) and damaged files."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DistillError(
            f"{path} asks for more than tensors ({str(exc).splitlines()[0][:120]}); refusing to load "
            "it: delete it to start over"
        ) from None
    except Exception as exc:
        raise DistillError(f"{path} is damaged ({exc.__class__.__name__}): delete it to start over") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or "state" not in payload:
        raise DistillError(f"{path} is not a distill checkpoint: delete it to start over")
    if payload.get("config_key") != config_key:
        saved = payload.get("identity")
        what = describe_difference(json.loads(saved), identity) if isinstance(saved, str) and identity else ""
        raise DistillError(
            f"{path} was written by a run with other settings{f' ({what})' if what else ''}: "
            "delete it, turn resuming off, or write this run elsewhere"
        )
    return payload["state"]
