"""Experts for distillation: trained in memory, or trained (resumably, over torchrun ranks) into a buffer folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from distill.buffers.legacy import check_expert_classifies, import_reference_buffers
from distill.buffers.recipe import ExpertRecipe, Trajectory, train_expert, train_experts_stacked
from distill.buffers.store import ModelSignature, completed_expert, write_expert, write_manifest
from distill.data.prepare import PreparedData
from distill.errors import DistillError
from distill.models.flat import FlatModel
from distill.models.registry import ModelSpec
from distill.parallel import Rank, barrier
from distill.seeds import derive_seed

EpochCallback = Callable[[int, int, float, float], None]  # (expert, epoch, train loss, test accuracy)


def model_signature(model: ModelSpec, channels: int, num_classes: int, resolution) -> ModelSignature:
    """The parameter table (names, shapes) of `model` for this data shape."""
    flat = FlatModel(model.build(channels, num_classes, resolution))
    return ModelSignature(model.name, dict(model.options), tuple(flat.names), tuple(flat.shapes))


def expert_seed(seed: int, k: int) -> int:
    """Expert k's seed: from the base seed and k only, never from the rank or the number of ranks."""
    return derive_seed(seed, "expert", k)


class InMemoryExperts:
    """Expert trajectories held in memory, read like a buffer folder: `params(k, epoch)` -> flat vector [P]."""

    def __init__(self, trajectories: list[Trajectory], names: list[str]):
        if not trajectories:
            raise ValueError("InMemoryExperts needs at least one trajectory")
        self.trajectories = trajectories
        self._flat = [torch.cat([t.params[name].reshape(len(t.params[name]), -1) for name in names], dim=1)
                      for t in trajectories]  # each [epochs + 1, P]
        self.epochs = min(len(f) for f in self._flat) - 1

    def __len__(self) -> int:
        return len(self._flat)

    def params(self, k: int, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Expert k's parameters after `epoch` epochs (0 = initialisation), float32 [P]."""
        if not 0 <= epoch <= self.epochs:
            raise IndexError(f"epoch {epoch} of an expert with {self.epochs} epochs")
        return self._flat[k][epoch].to(device)


def _train_one(data: PreparedData, model: ModelSpec, recipe: ExpertRecipe, seed: int, device, dtype,
               on_epoch: Callable[[int, float, float], None] | None, compiled: bool,
               mixed_precision: bool) -> Trajectory:
    net = model.build(data.channels, data.num_classes, data.resolution, seed=seed, device=device, dtype=dtype)
    trajectory = train_expert(net, recipe, data.train_images, data.train_labels, data.test_images,
                              data.test_labels, torch.Generator().manual_seed(seed), on_epoch, compiled,
                              mixed_precision)
    if not all(torch.isfinite(t).all() for t in trajectory.params.values()):
        raise DistillError(f"an expert diverged (non-finite parameters) at lr {recipe.lr}: lower the expert lr")
    return trajectory


def _train_group(data: PreparedData, model: ModelSpec, recipe: ExpertRecipe, indices: list[int], seed: int,
                 on_epoch: EpochCallback | None, compiled: bool, mixed_precision: bool = False) -> list[Trajectory]:
    """Experts `indices`: one at a time (through torch.compile when `compiled`, under bfloat16 autocast when
    `mixed_precision`), or (more than one) at once in one vmapped pass (eager, full precision)."""
    device, dtype = data.train_images.device, data.train_images.dtype
    if len(indices) == 1:
        k = indices[0]
        callback = (lambda e, loss, acc: on_epoch(k, e, loss, acc)) if on_epoch else None
        return [_train_one(data, model, recipe, expert_seed(seed, k), device, dtype, callback, compiled,
                           mixed_precision)]
    if mixed_precision:
        raise DistillError("mixed_precision trains experts one at a time: set buffers.parallel=1")
    seeds = [expert_seed(seed, k) for k in indices]
    nets = [model.build(data.channels, data.num_classes, data.resolution, seed=s, device=device, dtype=dtype)
            for s in seeds]
    callback = (lambda i, e, loss, acc: on_epoch(indices[i], e, loss, acc)) if on_epoch else None
    trajectories = train_experts_stacked(nets, recipe, data.train_images, data.train_labels, data.test_images,
                                         data.test_labels, [torch.Generator().manual_seed(s) for s in seeds], callback)
    if not all(torch.isfinite(t).all() for tr in trajectories for t in tr.params.values()):
        raise DistillError(f"an expert diverged (non-finite parameters) at lr {recipe.lr}: lower the expert lr")
    return trajectories


def _groups(indices: list[int], size: int) -> list[list[int]]:
    if not isinstance(size, int) or size < 1:
        raise DistillError(f"parallel must be an integer >= 1 (got {size!r})")
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def train_experts(data: PreparedData, model: ModelSpec, recipe: ExpertRecipe, num_experts: int, seed: int = 0,
                  on_epoch: EpochCallback | None = None, parallel: int = 1,
                  compile_training: bool = False, mixed_precision: bool = False) -> InMemoryExperts:
    """Train `num_experts` experts of `model` on `data` (on its device and dtype) and keep them in memory.

    Expert k uses `expert_seed(seed, k)` for its initialisation, data order and augmentation, so it
    equals expert k of a buffer folder built with the same arguments. `parallel` > 1 trains that many
    at once in one vmapped pass (the same trajectories up to float round-off; faster where the
    device is not saturated by one small network, e.g. on a GPU). `compile_training=True` trains each expert
    (one at a time) through torch.compile: the same trajectories to float round-off, faster where the
    training is long enough to pay for compiling (about 2x at batch 256 on a CPU). `mixed_precision=True`
    trains them under bfloat16 autocast (`distill.models.precision`: faster where the hardware has bfloat16
    arithmetic, not exact); it needs `parallel` 1.
    """
    if not isinstance(num_experts, int) or num_experts < 1:
        raise DistillError(f"num_experts must be an integer >= 1 (got {num_experts!r})")
    trajectories = []
    for group in _groups(list(range(num_experts)), parallel):
        trajectories += _train_group(data, model, recipe, group, seed, on_epoch, compile_training, mixed_precision)
    names = FlatModel(model.build(data.channels, data.num_classes, data.resolution)).names
    return InMemoryExperts(trajectories, names)


def build_buffer(folder: str | Path, data: PreparedData, model: ModelSpec, recipe: ExpertRecipe, num_experts: int,
                 seed: int = 0, config: dict | None = None, rank: Rank = Rank(),
                 on_epoch: EpochCallback | None = None, log: Callable[[str], None] = print, parallel: int = 1,
                 compile_training: bool = False, mixed_precision: bool = False) -> Path:
    """Train experts 0..num_experts-1 into `folder` (one safetensors file each, then manifest.json).

    Experts already complete and verified in the folder are kept (a killed run resumes); under
    torchrun, rank r trains experts r, r + world, ... and rank 0 writes the manifest after all are done.
    `config` (plain dict) is stored in the manifest; `parallel`, `compile_training` and `mixed_precision` as
    in `train_experts`. An expert's sidecar says when it was trained in mixed precision, and a complete
    expert of the other precision in the folder is refused, not overwritten. Returns the folder.
    """
    folder = Path(folder)
    signature = model_signature(model, data.channels, data.num_classes, data.resolution)
    device, dtype = data.train_images.device, data.train_images.dtype
    todo = []
    for k in range(rank.rank, num_experts, rank.world):
        record = completed_expert(folder, k, expert_seed(seed, k), recipe.epochs)
        if record is None:
            todo.append(k)
            continue
        if bool(record.get("mixed_precision", False)) != mixed_precision:
            made, asked = ("mixed", "full") if record.get("mixed_precision") else ("full", "mixed")
            raise DistillError(
                f"expert {k} in {folder} was trained in {made} precision and this run asks for {asked}: "
                f"use another buffer folder (paths.buffers) or mixed_precision={str(not mixed_precision).lower()}"
            )
        log(f"expert {k}: complete and verified, skipped")
    for group in _groups(todo, parallel):
        started = time.perf_counter()
        trajectories = _train_group(data, model, recipe, group, seed, on_epoch, compile_training, mixed_precision)
        seconds = (time.perf_counter() - started) / len(group)
        for k, trajectory in zip(group, trajectories):
            write_expert(folder, k, trajectory.params, signature, data.fingerprint, expert_seed(seed, k),
                         trajectory.train_loss, trajectory.test_accuracy,
                         {"train_seconds": round(seconds, 1), "images_per_second": round(trajectory.images_per_second),
                          **({"mixed_precision": True} if mixed_precision else {})})
            log(f"expert {k}: {recipe.epochs} epochs, final train loss {trajectory.train_loss[-1]:.4f}, test acc "
                f"{trajectory.test_accuracy[-1]:.4f}, {trajectory.images_per_second:.0f} img/s, {seconds:.1f} s")
    barrier(rank)
    if rank.is_main:
        sidecars = []
        for k in range(num_experts):
            record = completed_expert(folder, k, expert_seed(seed, k), recipe.epochs)
            if record is None:
                raise DistillError(f"expert {k} is missing from {folder} after training: run the same call again")
            sidecars.append(record)
        write_manifest(folder, config or {}, data.fingerprint, signature, sidecars)
        log(f"buffer ready: {folder} ({len(sidecars)} experts x {recipe.epochs} epochs)")
    return folder


def import_buffer(source: str | Path, folder: str | Path, data: PreparedData, model: ModelSpec,
                  config: dict | None = None, log: Callable[[str], None] = print) -> Path:
    """Convert the official code's `replay_buffer_*.pt` files in `source` into a buffer folder.

    The first expert must classify a slice of the test split well above chance under `data`'s
    preprocessing (else: one-line refusal, nothing written). Returns the folder.
    """
    signature = model_signature(model, data.channels, data.num_classes, data.resolution)
    student = FlatModel(model.build(data.channels, data.num_classes, data.resolution,
                                    device=data.test_images.device, dtype=data.test_images.dtype))

    def check(params: dict, name: str) -> None:
        accuracy = check_expert_classifies(params, student, data.test_images, data.test_labels, data.num_classes, name)
        log(f"{name}: {accuracy:.1%} test accuracy under this project's preprocessing")

    sidecars = import_reference_buffers(Path(source), Path(folder), signature, data.fingerprint, check)
    write_manifest(Path(folder), config or {}, data.fingerprint, signature, sidecars)
    log(f"imported {len(sidecars)} experts into {folder}")
    return Path(folder)
