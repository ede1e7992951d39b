"""distill-run: learn a synthetic set from an expert buffer (DATM; MTT with method=mtt or the mtt presets)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from tqdm import tqdm

from distill.buffers.build import model_signature
from distill.buffers.store import BufferReader
from distill.config import Config
from distill.errors import DistillError
from distill.io.lock import folder_lock
from distill.io.tensors import sha256_file
from distill.matching.loop import StepRecord
from distill.matching.run import distill_set, write_run_outputs
from distill.matching.unroll import Shard
from distill.stages.common import Logger, in_config_terms, start


def buffer_description(reader: BufferReader) -> dict:
    """Which buffer made an artifact: folder, manifest hash, how many experts of how many epochs."""
    return {
        "folder": str(reader.folder),
        "manifest_sha256": sha256_file(reader.folder / "manifest.json"),
        "experts": len(reader),
        "epochs": reader.epochs,
    }


@in_config_terms
def run_distill(cfg: Config) -> Path:
    """Distil `cfg` into its run folder (`Config.distill_folder`); returns the folder holding distilled.safetensors."""
    ctx = start(cfg, "distill")
    # under torchrun every rank distils its slice of each minibatch; rank 0 holds the lock and writes
    with folder_lock(ctx.cfg.distill_folder()) if ctx.rank.is_main else nullcontext():
        return _run_distill(ctx)


def _run_distill(ctx) -> Path:
    cfg, d = ctx.cfg, ctx.cfg.distill
    data = ctx.data()
    signature = model_signature(cfg.model, data.channels, data.num_classes, data.resolution)
    reader = BufferReader(cfg.buffers_folder(), data.fingerprint, signature, min_epochs=d.required_epochs)
    out = cfg.distill_folder()
    logger = Logger(cfg.logger, cfg.to_dict(), "distill", ctx.rank)
    main_rank = ctx.rank.is_main
    bar = tqdm(total=d.iterations, desc=f"distill ipc{d.ipc}", unit="it", disable=not (cfg.progress and main_rank))

    def on_step(record: StepRecord) -> None:
        bar.n = record.iteration + 1
        bar.set_postfix(
            loss=f"{record.loss:.3f}",
            lr=f"{record.syn_lr:.4g}",
            window=f"[{d.min_start_epoch},{record.upper_bound})",
            skipped=record.skipped is not None,
        )
        logger.log(
            {
                "loss": record.loss,
                "syn_lr": record.syn_lr,
                "start_epoch": record.start_epoch,
                "window_upper": record.upper_bound,
                "skipped": int(record.skipped is not None),
                "seconds": record.seconds,
            },
            step=record.iteration,
        )

    def on_eval(iteration: int, score: float, best: bool) -> None:
        say(f"iteration {iteration}: {d.selection} accuracy {score:.4f}{' (best)' if best else ''}")
        logger.log({f"{d.selection}_accuracy": score}, step=iteration)

    def say(line: str) -> None:
        if main_rank:
            tqdm.write(line)

    shard = Shard(ctx.rank.rank, ctx.rank.world)
    result = distill_set(
        data,
        reader,
        cfg.model,
        d,
        cfg.seed,
        cfg.protocol,
        out / "checkpoint.pt",
        on_step,
        on_eval,
        log=say,
        shard=shard,
        compile_training=cfg.compile_training,
        mixed_precision=cfg.mixed_precision,
    )
    bar.close()
    if main_rank:
        write_run_outputs(
            out,
            result,
            data,
            cfg.model,
            d,
            {"config": cfg.to_dict(), "buffer": buffer_description(reader), "ranks": ctx.rank.world},
        )
        print(
            f"distilled set: {out / 'distilled.safetensors'} ({result.selection}; {result.skipped} skipped updates; "
            f"lr {float(result.selected['lr']):.4g})"
        )
        logger.image("synthetic_images", out / "grid.png")
    logger.finish()
    if result.stopped is not None:
        raise DistillError(
            f"{result.stopped}; the best and last sets are in {out}: raise "
            "distill.max_consecutive_skips to go on from the last checkpoint, or start anew with a "
            "lower distill.lr_img / distill.lr_lr or a higher distill.threshold (and check the buffer)"
        )
    return out
