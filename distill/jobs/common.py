"""What every job shares: the error boundary, dtype choice, data preparation, logging."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from distill.data import ImageData, load_dataset
from distill.data.preprocess import REFERENCE_STATISTICS, Preprocessor, fit_preprocessor
from distill.data.splits import stratified_holdout
from distill.errors import DistillError
from distill.jobs.ranks import Rank, shutdown

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def friendly_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a DistillError (and Ctrl-C) into one line on stderr and exit status 2 (130)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            result = main(*args, **kwargs)
            shutdown()  # ranks leave together: a rank exiting while rank 0 still writes can abort gloo
            return result
        except DistillError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: re-run the same command to resume from the last checkpoint", file=sys.stderr)
            sys.exit(130)
        finally:
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()

    return wrapper


def choose_dtype(setting: str) -> torch.dtype:
    """'float32' / 'float64' -> the torch dtype."""
    table = {"float32": torch.float32, "float64": torch.float64}
    if setting not in table:
        raise DistillError(f"dtype={setting} is not supported: use float32 or float64")
    return table[setting]


@dataclass
class PreparedData:
    """A dataset split three ways and mapped into model-input space (float tensors on `device`).

    train/val/test images: [N, C, H, W]; labels: int64 [N].
    """

    raw: ImageData
    preprocessor: Preprocessor
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    fingerprint: dict

    @property
    def num_classes(self) -> int:
        return self.raw.num_classes

    @property
    def channels(self) -> int:
        return self.raw.channels

    @property
    def resolution(self) -> tuple[int, int]:
        return self.raw.resolution


def prepare_data(cfg: DictConfig, device: torch.device, dtype: torch.dtype = torch.float32,
                 preprocessor: Preprocessor | None = None) -> PreparedData:
    """Load `cfg.dataset`, carve the validation split, fit normalisation/ZCA on the remaining train split
    (or use `preprocessor`, e.g. the one stored in a distilled artifact)."""
    ds = cfg.dataset
    raw = load_dataset(ds.name, ds.root, download=ds.download)
    keep, held = stratified_holdout(raw.train_labels, int(ds.val_per_class), int(ds.val_seed))
    train_u8 = raw.train_images[keep]
    fixed = REFERENCE_STATISTICS[ds.name] if ds.get("normalisation", "measured") == "reference" else None
    pre = preprocessor or fit_preprocessor(train_u8, zca=bool(ds.zca), zca_eps=float(ds.zca_eps), fixed_statistics=fixed)

    def to(x: torch.Tensor) -> torch.Tensor:
        return pre.apply(x).to(device=device, dtype=dtype)

    fingerprint = {
        "dataset": ds.name,
        "train_images": int(len(keep)),
        "val_per_class": int(ds.val_per_class),
        "val_seed": int(ds.val_seed),
        "resolution": list(raw.resolution),
        "channels": raw.channels,
        "num_classes": raw.num_classes,
        "preprocess": pre.fingerprint(),
    }
    return PreparedData(raw, pre, to(train_u8), raw.train_labels[keep].to(device),
                        to(raw.train_images[held]), raw.train_labels[held].to(device),
                        to(raw.test_images), raw.test_labels.to(device), fingerprint)


def model_options(cfg: DictConfig) -> dict:
    """The model's builder options as a plain dict."""
    return dict(OmegaConf.to_container(cfg.model.get("options", {}) or {}, resolve=True))


class Logger:
    """wandb when `cfg.logger.enabled` (offline by default), else a no-op. Only rank 0 logs."""

    def __init__(self, cfg: DictConfig, job: str, rank: Rank = Rank()):
        self.run = None
        if cfg.logger.enabled and rank.is_main:
            try:
                import wandb
            except ImportError:
                raise DistillError("logger=wandb needs the wandb package: pip install wandb") from None
            self.run = wandb.init(project=cfg.logger.project, entity=cfg.logger.get("entity"), mode=cfg.logger.mode,
                                  job_type=job, config=OmegaConf.to_container(cfg, resolve=True))

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
