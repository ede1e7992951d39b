"""What the commands share beyond the library: the run context (config, rank, device, data) and logging."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distill.config import Config, LoggerConfig, as_config_error, to_config
from distill.data.prepare import PreparedData, prepare_data
from distill.data.preprocess import Preprocessor
from distill.errors import DistillError, SettingError
from distill.parallel import Rank, barrier, choose_device, init_distributed

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Context:
    """One command's typed config, torchrun rank, device and dtype."""

    cfg: Config
    rank: Rank
    device: torch.device
    dtype: torch.dtype

    def data(self, preprocessor: Preprocessor | None = None) -> PreparedData:
        """The prepared dataset; under torchrun rank 0 goes first, so the others load what it cached (ZCA)."""
        if self.rank.world > 1 and not self.rank.is_main:
            barrier(self.rank)
        data = prepare_data(self.cfg.dataset, self.device, self.dtype, preprocessor)
        if self.rank.world > 1 and self.rank.is_main:
            barrier(self.rank)
        return data


def in_config_terms(job: Callable[..., Any]) -> Callable[..., Any]:
    """Re-word the library's setting errors (`DistillSettings.ipc ...`) with config keys (`distill.ipc ...`)."""

    @functools.wraps(job)
    def wrapper(*args, **kwargs):
        try:
            return job(*args, **kwargs)
        except SettingError as exc:
            raise as_config_error(exc) from None

    return wrapper


def start(cfg, job: str) -> Context:
    """Typed config (checked for `job`), the process group when under torchrun, device and dtype."""
    config = to_config(cfg)
    config.check_for(job)
    rank = init_distributed(config.device)
    return Context(config, rank, choose_device(config.device, rank), DTYPES[config.dtype])


class Logger:
    """wandb when `settings.enabled` (offline by default), else a no-op. Only rank 0 logs."""

    def __init__(self, settings: LoggerConfig, config: dict, job: str, rank: Rank = Rank()):
        self.run = None
        if settings.enabled and rank.is_main:
            try:
                import wandb
            except ImportError:
                raise DistillError("logger=wandb needs the wandb package: pip install wandb") from None
            self.run = wandb.init(
                project=settings.project, entity=settings.entity, mode=settings.mode, job_type=job, config=config
            )

    def log(self, values: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def image(self, key: str, path: Path, step: int | None = None) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path))}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
