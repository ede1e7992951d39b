"""torchrun ranks (library-wide): joining the process group, device and threads per rank, coordination, teardown.

Data moves between ranks only through `gather_objects` (small Python results) and `barrier`, both on
a gloo group with a long timeout: they coordinate work of uneven length (an expert more on one rank,
an evaluation run more on another) that can outlast NCCL's default 10-minute collective timeout.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from distill.errors import DistillError

COORDINATION_TIMEOUT = timedelta(hours=12)


@dataclass
class Rank:
    """This process's place among torchrun workers (rank 0 of 1 when run directly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    coordination: object | None = None  # the gloo group for barriers and object gathers

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _wants_cuda(setting: str) -> bool:
    return setting.startswith("cuda") or (setting == "auto" and torch.cuda.is_available())


def init_distributed(device_setting: str = "auto") -> Rank:
    """Join the torchrun process group when launched by torchrun; a plain `Rank()` otherwise.

    GPU jobs: each rank takes GPU `LOCAL_RANK % visible GPUs`, set as the current device before NCCL
    starts (so collectives never all land on cuda:0). CPU jobs: gloo, and each rank gets
    (cores / ranks on this node) threads, since ranks sharing cores with full thread pools run many
    times slower than one process alone.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Rank()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if not dist.is_initialized():
        if _wants_cuda(device_setting) and torch.cuda.is_available():
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))
            dist.init_process_group("gloo", timeout=COORDINATION_TIMEOUT)
    coordination = (
        dist.new_group(backend="gloo", timeout=COORDINATION_TIMEOUT) if dist.get_backend() != "gloo" else None
    )
    return Rank(dist.get_rank(), dist.get_world_size(), local_rank, local_world, coordination)


def choose_device(setting: str, rank: Rank) -> torch.device:
    """'auto' -> this rank's GPU when CUDA exists, else the CPU (said in one line); anything else as given."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", rank.local_rank % torch.cuda.device_count())
        if rank.is_main:
            print(f"device=auto: torch {torch.__version__} sees no CUDA GPU; running on the CPU", file=sys.stderr)
        return torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DistillError(f"device={setting} but no CUDA GPU is visible: use device=cpu or device=auto")
    return device


def barrier(rank: Rank | None = None) -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier(group=rank.coordination if rank is not None else None)


def gather_objects(value, rank: Rank) -> list:
    """Every rank's `value` (picklable), in rank order; [value] without a process group."""
    if rank.world == 1:
        return [value]
    gathered = [None] * rank.world
    dist.all_gather_object(gathered, value, group=rank.coordination)
    return gathered


def shutdown() -> None:
    """Leave the process group together: a barrier, then destroy it (no-op without one).

    A rank that tears its connections down while another is still inside a collective makes gloo
    abort the other process, so every rank first waits for all the others.
    """
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def abandon() -> None:
    """Leave the process group at once, without waiting for the others (error paths: a barrier could
    wait forever for a rank that is still working)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
