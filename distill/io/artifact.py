"""The distilled-set artifact: images in model-input space, label logits, learned lr, classes, metadata."""

from __future__ import annotations

from pathlib import Path

import torch

from distill.errors import DistillError
from distill.io.tensors import load_tensors, save_tensors, sha256_file

ARTIFACT_FORMAT = "distill.distilled-set/1"


def save_artifact(
    path: str | Path, synthetic: dict[str, torch.Tensor], metadata: dict, preprocess_state: dict[str, torch.Tensor]
) -> Path:
    """Atomically write a distilled set.

    synthetic: images [N, C, H, W], label_logits [N, K], lr [], classes [N]. The preprocessing
    statistics are stored beside them (prefix `preprocess.`) so evaluation and pictures can use the
    same normalisation / ZCA. metadata must be JSON-able; the format tag is added.
    """
    tensors = {k: synthetic[k] for k in ("images", "label_logits", "lr", "classes")}
    tensors.update({f"preprocess.{k}": v for k, v in preprocess_state.items()})
    return save_tensors(path, tensors, {"format": ARTIFACT_FORMAT, **metadata})


def load_artifact(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """Read and check a distilled set (a distilled.safetensors or the run folder holding one).
    Returns (synthetic tensors, preprocessing state, metadata).

    Refuses files of another format, with inconsistent shapes, non-finite values or a non-positive lr.
    """
    path = Path(path)
    if path.is_dir() and (path / "distilled.safetensors").is_file():
        path = path / "distilled.safetensors"  # a run folder
    if path.suffix == ".pt" and path.is_file():
        raise DistillError(
            f"{path} is a torch file (a checkpoint?), not a distilled set: pass the run folder or "
            "its distilled.safetensors"
        )
    if not path.is_file():
        raise DistillError(f"no distilled set at {path}: pass a run folder or its distilled.safetensors")
    tensors, meta = load_tensors(path)
    if meta.get("format") != ARTIFACT_FORMAT:
        raise DistillError(
            f"{path} is not a distilled set (format {meta.get('format')!r}): pass a distilled.safetensors"
        )
    missing = [k for k in ("images", "label_logits", "lr", "classes") if k not in tensors]
    if missing:
        raise DistillError(f"{path} lacks {missing}: the file is damaged, re-run distill-run")
    images, logits, lr, classes = (tensors[k] for k in ("images", "label_logits", "lr", "classes"))
    n = len(images)
    if images.ndim != 4 or logits.shape[0] != n or classes.shape != (n,) or lr.numel() != 1:
        raise DistillError(
            f"{path}: inconsistent shapes images {tuple(images.shape)}, labels {tuple(logits.shape)}, "
            f"classes {tuple(classes.shape)}: the file is damaged, re-run distill-run"
        )
    if not (torch.isfinite(images).all() and torch.isfinite(logits).all() and torch.isfinite(lr).all()):
        raise DistillError(f"{path} holds non-finite values: use an earlier checkpoint or re-run distill-run")
    if float(lr) <= 0:
        raise DistillError(f"{path} has learned lr {float(lr):.4g} <= 0: evaluate it with a positive protocol lr")
    preprocess = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("preprocess.")}
    synthetic = {k: tensors[k] for k in ("images", "label_logits", "lr", "classes")}
    meta["sha256"] = sha256_file(path)
    return synthetic, preprocess, meta
