"""Import of the reference code's `replay_buffer_<n>.pt` files into this project's buffer format.

A reference file is a list of experts; an expert is a list of checkpoints (epoch 0 first); a
checkpoint is a list of parameter tensors in `model.parameters()` order, with no names.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import torch

from distill.buffers.store import ModelSignature, write_expert
from distill.errors import DistillError
from distill.models.flat import FlatModel


def reference_files(folder: Path) -> list[Path]:
    """replay_buffer_0.pt, replay_buffer_1.pt, ... in index order, stopping at the first gap (as the reference does)."""
    files = []
    for n in range(10_000):
        path = Path(folder) / f"replay_buffer_{n}.pt"
        if not path.is_file():
            break
        files.append(path)
    if not files:
        found = sorted(p.name for p in Path(folder).glob("*.pt"))
        raise DistillError(f"no replay_buffer_0.pt in {folder} (found {found[:5]}): import from the folder holding "
                           "the official code's replay_buffer_<n>.pt files")
    return files


def load_reference_file(path: Path) -> list:
    """Load one reference file with weights_only=True (no code runs); returns its list of experts."""
    try:
        experts = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0][:200]
        raise DistillError(f"{path} asks for more than tensors and lists ({reason}); refusing to load it") from None
    except Exception as exc:
        raise DistillError(f"{path} is not a readable torch file ({exc.__class__.__name__}): re-copy it") from None
    if not isinstance(experts, list):
        raise DistillError(f"{path} holds a {type(experts).__name__}, expected a list of experts")
    return experts


def convert_expert(expert: list, signature: ModelSignature, source: str) -> dict[str, torch.Tensor]:
    """One reference expert (list of checkpoints of tensors) -> {name: [epochs + 1, *shape]}."""
    if not isinstance(expert, list) or not expert:
        raise DistillError(f"{source}: an expert must be a non-empty list of checkpoints")
    count = len(signature.param_names)
    for epoch, checkpoint in enumerate(expert):
        if not isinstance(checkpoint, (list, tuple)) or len(checkpoint) != count:
            got = len(checkpoint) if isinstance(checkpoint, (list, tuple)) else type(checkpoint).__name__
            raise DistillError(f"{source}: checkpoint {epoch} holds {got} tensors, model '{signature.name}' has "
                               f"{count}: choose the model these buffers were trained with")
        for name, shape, tensor in zip(signature.param_names, signature.param_shapes, checkpoint):
            if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
                got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise DistillError(f"{source}: checkpoint {epoch} '{name}' is {got}, model expects {shape}: "
                                   "choose the model (and options) these buffers were trained with")
    return {name: torch.stack([checkpoint[i].float() for checkpoint in expert])
            for i, name in enumerate(signature.param_names)}


@torch.no_grad()
def check_expert_classifies(params: dict[str, torch.Tensor], student: FlatModel, images: torch.Tensor,
                            labels: torch.Tensor, num_classes: int, source: str, sample: int = 1000) -> float:
    """Accuracy of an expert's last checkpoint (params[name]: [epochs + 1, *shape]) on up to `sample` images
    [N, C, H, W] (a fixed random slice) with labels [N]; refuses in one line below 3x chance (at most 50 %).

    A trained expert that scores near chance here was trained with another class order or another
    preprocessing than this project applies, and distilling from it would silently go wrong.
    """
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:sample].to(images.device)
    flat = torch.cat([params[name][-1].reshape(-1) for name in student.names]).to(images)
    predicted = torch.cat([student.pure(flat, images[chosen[i:i + 256]]).argmax(1)
                           for i in range(0, len(chosen), 256)])
    accuracy = float((predicted == labels[chosen]).float().mean())
    need = min(0.5, 3.0 / num_classes)
    if accuracy < need:
        raise DistillError(f"{source}: its last checkpoint classifies {accuracy:.1%} of {len(chosen)} test images "
                           f"correctly (chance {1 / num_classes:.1%}, needed {need:.0%}): the buffers were trained "
                           "with another class order or preprocessing; match the dataset's ZCA / normalisation "
                           "settings to the ones they were trained with")
    return accuracy


def import_reference_buffers(source: Path, destination: Path, signature: ModelSignature, fingerprint: dict,
                             check: Callable[[dict[str, torch.Tensor], str], object] | None = None) -> list[dict]:
    """Convert every expert of `source`'s replay_buffer_*.pt files into `destination`. Returns the sidecars.

    `check(params, source)` runs on the first expert before anything is written (e.g.
    `check_expert_classifies`), so a refused import leaves `destination` as it was.
    """
    sidecars = []
    for path in reference_files(source):
        for expert in load_reference_file(path):
            index = len(sidecars)
            params = convert_expert(expert, signature, f"{path.name} expert {index}")
            if index == 0 and check is not None:
                check(params, f"{path.name} expert 0")
            sidecars.append(write_expert(destination, index, params, signature, fingerprint, seed=-1,
                                         train_loss=[], test_accuracy=[]))
    return sidecars


