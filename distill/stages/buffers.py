"""distill-buffers: train K experts (sharded over torchrun ranks) and record their trajectories."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

from tqdm import tqdm

from distill.buffers.build import build_buffer, import_buffer, model_signature
from distill.buffers.store import check_folder_owner
from distill.config import Config
from distill.errors import DistillError
from distill.io.lock import folder_lock
from distill.parallel import barrier
from distill.stages.common import Logger, in_config_terms, start

RECIPE_KEYS = ("epochs", "lr", "momentum", "weight_decay", "batch_size", "dsa", "dsa_strategy", "gsam")


def check_same_recipe(folder: Path, config: dict) -> None:
    """Refuse to mix experts trained with another recipe into an existing buffer folder."""
    manifest = folder / "manifest.json"
    if not manifest.is_file() or config["buffers"].get("import_from"):
        return
    theirs = json.loads(manifest.read_text()).get("config", {}).get("buffers", {})
    if theirs.get("import_from"):
        return
    for key in RECIPE_KEYS:
        if theirs.get(key) != config["buffers"].get(key):
            raise DistillError(
                f"{folder} holds experts trained with buffers.{key}={theirs.get(key)!r}, this run asks "
                f"for {config['buffers'].get(key)!r}: choose another paths.buffers or delete the folder"
            )


@in_config_terms
def run_buffers(cfg: Config) -> Path:
    """Train (or import) the experts of `cfg` into its buffer folder (`Config.buffers_folder`); returns it."""
    ctx = start(cfg, "buffers")
    # torchrun ranks write distinct expert files; rank 0 holds the folder's lock
    with folder_lock(ctx.cfg.buffers_folder()) if ctx.rank.is_main else nullcontext():
        return _run_buffers(ctx)


def _run_buffers(ctx) -> Path:
    cfg, rank = ctx.cfg, ctx.rank
    data = ctx.data()
    folder = cfg.buffers_folder()
    check_folder_owner(
        folder, data.fingerprint, model_signature(cfg.model, data.channels, data.num_classes, data.resolution)
    )
    config = cfg.to_dict()
    check_same_recipe(folder, config)
    if cfg.buffers.import_from:
        if rank.is_main:
            import_buffer(cfg.buffers.import_from, folder, data, cfg.model, config)
        barrier(rank)
        return folder

    logger = Logger(cfg.logger, config, "buffers", rank)
    bars: dict[int, tuple[tqdm, float]] = {}

    def on_epoch(k: int, epoch: int, loss: float, acc: float) -> None:
        if k not in bars:
            bars[k] = (
                tqdm(
                    total=cfg.buffers.epochs,
                    desc=f"expert {k} (rank {rank.rank})",
                    unit="epoch",
                    disable=not cfg.progress,
                    leave=False,
                ),
                time.perf_counter(),
            )
        bar, began = bars[k]
        bar.set_postfix(
            loss=f"{loss:.3f}",
            test_acc=f"{acc:.3f}",
            img_s=f"{epoch * len(data.train_images) / (time.perf_counter() - began):.0f}",
        )
        bar.update(1)
        if epoch == cfg.buffers.epochs:
            bar.close()
        logger.log({f"expert_{k}/train_loss": loss, f"expert_{k}/test_accuracy": acc, "epoch": epoch})

    build_buffer(
        folder,
        data,
        cfg.model,
        cfg.buffers.recipe(),
        cfg.buffers.num_experts,
        cfg.seed,
        config,
        rank,
        on_epoch,
        parallel=cfg.buffers.parallel,
        compile_training=cfg.compile_training,
        mixed_precision=cfg.mixed_precision,
    )
    logger.finish()
    return folder
