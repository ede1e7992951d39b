"""distill-run: learn a synthetic set from an expert buffer (DATM; MTT with the mtt presets)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from distill.buffers.store import BufferReader
from distill.errors import DistillError
from distill.evaluate.protocol import Protocol
from distill.evaluate.train import train_and_test
from distill.io.artifact import save_artifact
from distill.io.atomic import atomic_write_json
from distill.io.checkpoint import load_checkpoint, save_checkpoint
from distill.io.lock import folder_lock
from distill.io.pictures import save_grid
from distill.jobs.buffers import model_signature
from distill.jobs.common import (CONFIG_DIR, Logger, PreparedData, choose_dtype, friendly_errors, model_options,
                                 prepare_data)
from distill.jobs.ranks import choose_device, init_distributed
from distill.jobs.validate import required_epochs, validate_config
from distill.matching.init import (init_correct, init_label_logits, init_label_logits_one_expert, init_noise, init_real,
                                   synthetic_classes)
from distill.matching.loop import Distiller, DistillSettings, SkipLimitReached, run_loop
from distill.matching.window import Window
from distill.models import FlatModel, build_model
from distill.seeds import derive_seed

RESUME_IRRELEVANT = ("iterations", "resume", "checkpoint_every", "eval_every", "eval_runs", "eval_epochs", "selection",
                     "max_consecutive_skips")


def settings_from(cfg: DictConfig) -> DistillSettings:
    d = cfg.distill
    return DistillSettings(
        syn_steps=int(d.syn_steps), expert_epochs=int(d.expert_epochs),
        window=Window(int(d.min_start_epoch), int(d.current_max_start_epoch), int(d.max_start_epoch),
                      int(d.expansion_end_iteration), bool(d.sequential_generation)),
        lr_img=float(d.lr_img), lr_lr=float(d.lr_lr), lr_y=float(d.lr_y), momentum_img=float(d.momentum_img),
        momentum_lr=float(d.momentum_lr), momentum_y=float(d.momentum_y), min_syn_lr=float(d.min_syn_lr),
        batch_syn=None if d.batch_syn is None else int(d.batch_syn), threshold=float(d.threshold),
        soft_labels=bool(d.soft_labels), engine=str(d.engine), dsa_strategy=d.dsa_strategy if d.dsa else "",
        max_consecutive_skips=int(d.max_consecutive_skips))


def config_key(cfg: DictConfig, fingerprint: dict) -> str:
    """Hash of everything that shapes the trajectory of the run (not its length or bookkeeping)."""
    distill = {k: v for k, v in OmegaConf.to_container(cfg.distill, resolve=True).items() if k not in RESUME_IRRELEVANT}
    blob = json.dumps({"seed": cfg.seed, "dtype": cfg.dtype, "model": OmegaConf.to_container(cfg.model, resolve=True),
                       "distill": distill, "data": fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def protocol_from(cfg: DictConfig) -> Protocol:
    p = cfg.protocol
    return Protocol(name=p.name, epochs=int(p.epochs), lr=None if p.lr is None else float(p.lr),
                    baseline_lr=float(p.baseline_lr), momentum=float(p.momentum), weight_decay=float(p.weight_decay),
                    batch_size=int(p.batch_size), dsa_strategy=p.dsa_strategy if p.dsa else "", labels=p.labels)


def initial_set(cfg: DictConfig, data: PreparedData, reader: BufferReader, student: FlatModel,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Initial images [N, C, H, W] and label logits [N, K] (class-major) and the soft labels' initial accuracy."""
    d = cfg.distill
    ipc, k = int(d.ipc), data.num_classes
    seed = derive_seed(int(cfg.seed), "init")
    dtype = data.train_images.dtype
    classifiers = [(lambda x, w=reader.params(e, reader.epochs, device).to(dtype): student(w, x))
                   for e in range(len(reader))]
    labellers = classifiers if d.label_init_experts is None else classifiers[:int(d.label_init_experts)]
    student.module.eval()
    if d.pix_init == "real":
        images = init_real(data.train_images, data.train_labels, ipc, k, seed)
    elif d.pix_init == "correct":
        images = init_correct(data.train_images, data.train_labels, ipc, k, classifiers, seed)
    else:
        images = init_noise((ipc * k, data.channels, *data.resolution), seed, device, dtype)
    classes = synthetic_classes(k, ipc, device)
    if d.soft_labels and d.pix_init == "real":
        logits, acc = init_label_logits_one_expert(images, classes, classifiers[0])
    elif d.soft_labels:
        logits, acc = init_label_logits(images, classes, labellers)
    else:
        logits, acc = torch.nn.functional.one_hot(classes, k).to(dtype), 1.0
    student.module.train()
    return images, logits, acc


def set_targets(synthetic: dict, label_mode: str) -> torch.Tensor:
    """Training targets of a set: softmax probabilities [N, K] ('soft') or argmax classes [N] ('hard')."""
    logits = synthetic["label_logits"]
    return torch.softmax(logits, dim=1) if label_mode == "soft" else logits.argmax(1)


def run_distill(cfg: DictConfig) -> Path:
    """Distil `cfg` into `cfg.paths.distill`; returns the folder holding distilled.safetensors."""
    validate_config(cfg, "distill")
    with folder_lock(cfg.paths.distill):
        return _run_distill(cfg)


def _run_distill(cfg: DictConfig) -> Path:
    rank = init_distributed(cfg.device)
    device, dtype = choose_device(cfg.device, rank), choose_dtype(cfg.dtype)
    data = prepare_data(cfg, device, dtype)
    d = cfg.distill
    counts = torch.bincount(data.train_labels.cpu(), minlength=data.num_classes)
    if int(d.ipc) > int(counts.min()):
        raise DistillError(f"config: distill.ipc={d.ipc} exceeds the smallest class ({int(counts.min())} images)")
    signature = model_signature(cfg, data.channels, data.num_classes, data.resolution)
    need = required_epochs(int(d.max_start_epoch), int(d.expert_epochs))
    reader = BufferReader(cfg.paths.buffers, data.fingerprint, signature, min_epochs=need)
    student = FlatModel(build_model(cfg.model.name, data.channels, data.num_classes, data.resolution, seed=0,
                                    device=device, dtype=dtype, **model_options(cfg)))
    out = Path(cfg.paths.distill)
    key = config_key(cfg, data.fingerprint)
    ckpt_path = out / "checkpoint.pt"
    settings = settings_from(cfg)

    state = load_checkpoint(ckpt_path, key) if d.resume and ckpt_path.is_file() else None
    if state is None:
        images, logits, label_acc = initial_set(cfg, data, reader, student, device)
        print(f"initialised {len(images)} images ({d.pix_init}); soft-label argmax accuracy {label_acc:.3f}")
    else:
        images, logits, label_acc = state["images"].to(device), state["label_logits"].to(device), None
    distiller = Distiller(settings, reader, student, images, logits, float(d.lr_teacher),
                          synthetic_classes(data.num_classes, int(d.ipc), device), data.num_classes,
                          derive_seed(int(cfg.seed), "distill"))
    if state is not None:
        distiller.load_state_dict(state)
        print(f"resumed from {ckpt_path} at iteration {distiller.iteration}")

    protocol = protocol_from(cfg)
    sel_images, sel_labels = ((data.val_images, data.val_labels) if d.selection == "validation"
                              else (data.test_images, data.test_labels))
    if d.selection == "validation" and len(sel_images) == 0:
        raise DistillError("distill.selection=validation needs dataset.val_per_class > 0")

    def evaluate(synthetic: dict) -> float:
        scores = []
        for r in range(int(d.eval_runs)):
            seed = derive_seed(int(cfg.seed), f"distill-eval/{distiller.iteration}", r)
            model = build_model(cfg.model.name, data.channels, data.num_classes, data.resolution, seed=seed,
                                device=device, dtype=dtype, **model_options(cfg))
            mode = protocol.labels if d.soft_labels else "hard"  # one-hot "logits" are not soft labels
            scores.append(train_and_test(model, synthetic["images"], set_targets(synthetic, mode),
                                         sel_images, sel_labels, protocol, float(synthetic["lr"]), seed,
                                         epochs=int(d.eval_epochs)))
        return sum(scores) / len(scores)

    logger = Logger(cfg, "distill", rank)
    bar = tqdm(total=int(d.iterations), initial=distiller.iteration, desc=f"distill ipc{d.ipc}", unit="it",
               disable=not cfg.progress)

    def on_step(record) -> None:
        bar.set_postfix(loss=f"{record.loss:.3f}", lr=f"{record.syn_lr:.4g}",
                        window=f"[{settings.window.min_start},{record.upper_bound})", skips=distiller.skipped)
        bar.update(1)
        logger.log({"loss": record.loss, "syn_lr": record.syn_lr, "start_epoch": record.start_epoch,
                    "window_upper": record.upper_bound, "skipped": int(record.skipped is not None),
                    "seconds": record.seconds}, step=record.iteration)

    def on_eval(iteration: int, score: float, best: bool) -> None:
        tqdm.write(f"iteration {iteration}: {d.selection} accuracy {score:.4f}{' (best)' if best else ''}")
        logger.log({f"{d.selection}_accuracy": score}, step=iteration)

    def checkpoint(dist: Distiller) -> None:
        save_checkpoint(ckpt_path, dist.state_dict(), key)

    started = time.perf_counter()
    stopped = None
    try:
        run_loop(distiller, int(d.iterations), int(d.eval_every), evaluate, checkpoint, int(d.checkpoint_every),
                 on_step, on_eval)
    except SkipLimitReached as exc:
        stopped = str(exc)  # like the reference, a run that cannot improve still ends with its outputs
    bar.close()
    write_outputs(cfg, out, distiller, data, signature.name, key, time.perf_counter() - started, label_acc, stopped)
    logger.image("synthetic_images", out / "grid.png")
    logger.finish()
    if stopped is not None:
        raise DistillError(f"{stopped}; the best and last sets are in {out}: raise distill.max_consecutive_skips to "
                           "go on from the last checkpoint, or start anew with a lower distill.lr_img / "
                           "distill.lr_lr or a higher distill.threshold (and check the buffer)")
    return out


def write_outputs(cfg: DictConfig, out: Path, distiller: Distiller, data: PreparedData, model_name: str, key: str,
                  seconds: float, label_acc: float, stopped: str | None = None) -> None:
    """distilled.safetensors (the selected set), distilled_last.safetensors, grid.png and summary.json
    (`stopped`: why the run ended before distill.iterations, None when it did not)."""
    d = cfg.distill
    selected = distiller.best_set if distiller.best_set is not None else distiller.current_set()
    rule = f"best {d.selection} accuracy" if distiller.best_set is not None else "last iteration (no evaluation)"
    base_meta = {"dataset_fingerprint": data.fingerprint, "model": model_name,
                 "model_options": model_options(cfg), "ipc": int(d.ipc), "soft_labels": bool(d.soft_labels),
                 "config": OmegaConf.to_container(cfg, resolve=True), "config_key": key}
    state = data.preprocessor.state()
    save_artifact(out / "distilled.safetensors", selected, {
        **base_meta, "iteration": distiller.best["iteration"] if distiller.best_set is not None else distiller.iteration,
        "selection": rule, "selection_split": d.selection if distiller.best_set is not None else None,
        "selection_score": distiller.best["score"] if distiller.best_set is not None else None}, state)
    save_artifact(out / "distilled_last.safetensors", distiller.current_set(),
                  {**base_meta, "iteration": distiller.iteration, "selection": "last iteration"}, state)
    save_grid(out / "grid.png", data.preprocessor.invert(selected["images"]), data.num_classes)
    atomic_write_json(out / "summary.json", {
        "iterations": distiller.iteration, "skipped_updates": distiller.skipped, "best": distiller.best,
        "selection": rule, "final_syn_lr": float(distiller.syn_lr.detach()), "initial_label_accuracy": label_acc,
        "seconds_this_session": round(seconds, 2), "stopped_early": stopped})
    print(f"distilled set: {out / 'distilled.safetensors'} ({rule}; {distiller.skipped} skipped updates; "
          f"lr {float(selected['lr']):.4g})")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@friendly_errors
def main(cfg: DictConfig) -> None:
    run_distill(cfg)


if __name__ == "__main__":
    main()
