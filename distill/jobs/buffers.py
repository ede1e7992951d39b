"""distill-buffers: train K experts (sharded over torchrun ranks) and record their trajectories."""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from distill.buffers.legacy import check_expert_classifies, import_reference_buffers
from distill.buffers.recipe import ExpertRecipe, train_expert
from distill.buffers.store import ModelSignature, check_folder_owner, completed_expert, write_expert, write_manifest
from distill.errors import DistillError
from distill.io.lock import folder_lock
from distill.jobs.common import CONFIG_DIR, Logger, choose_dtype, friendly_errors, model_options, prepare_data
from distill.jobs.ranks import barrier, choose_device, init_distributed
from distill.jobs.validate import validate_config
from distill.models import FlatModel, build_model
from distill.seeds import derive_seed


def model_signature(cfg: DictConfig, channels: int, num_classes: int, resolution) -> ModelSignature:
    """The parameter table of `cfg.model` for this data shape."""
    flat = FlatModel(build_model(cfg.model.name, channels, num_classes, resolution, **model_options(cfg)))
    return ModelSignature(cfg.model.name, model_options(cfg), tuple(flat.names), tuple(flat.shapes))


def recipe_from(cfg: DictConfig) -> ExpertRecipe:
    b = cfg.buffers
    return ExpertRecipe(epochs=int(b.epochs), lr=float(b.lr), momentum=float(b.momentum),
                        weight_decay=float(b.weight_decay), batch_size=int(b.batch_size),
                        dsa_strategy=b.dsa_strategy if b.dsa else "", gsam=bool(b.gsam.enabled),
                        gsam_rho=float(b.gsam.rho), gsam_alpha=float(b.gsam.alpha), gsam_adaptive=bool(b.gsam.adaptive))


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
            raise DistillError(f"{folder} holds experts trained with buffers.{key}={theirs.get(key)!r}, this run asks "
                               f"for {config['buffers'].get(key)!r}: choose another paths.buffers or delete the folder")


def run_buffers(cfg: DictConfig) -> Path:
    """Train (or import) the experts of `cfg` into `cfg.paths.buffers`; returns the folder."""
    validate_config(cfg, "buffers")
    rank = init_distributed(cfg.device)
    if not rank.is_main:  # torchrun ranks write distinct expert files; rank 0 holds the folder's lock
        return _run_buffers(cfg, rank)
    with folder_lock(cfg.paths.buffers):
        return _run_buffers(cfg, rank)


def _run_buffers(cfg: DictConfig, rank) -> Path:
    device, dtype = choose_device(cfg.device, rank), choose_dtype(cfg.dtype)
    data = prepare_data(cfg, device, dtype)
    folder = Path(cfg.paths.buffers)
    signature = model_signature(cfg, data.channels, data.num_classes, data.resolution)
    check_folder_owner(folder, data.fingerprint, signature)
    config = OmegaConf.to_container(cfg, resolve=True)
    check_same_recipe(folder, config)

    if cfg.buffers.import_from:
        if rank.is_main:
            student = FlatModel(build_model(cfg.model.name, data.channels, data.num_classes, data.resolution,
                                            device=device, dtype=dtype, **model_options(cfg)))

            def check(params: dict, source: str) -> None:
                accuracy = check_expert_classifies(params, student, data.test_images, data.test_labels,
                                                   data.num_classes, source)
                print(f"{source}: {accuracy:.1%} test accuracy under this project's preprocessing")

            sidecars = import_reference_buffers(Path(cfg.buffers.import_from), folder, signature, data.fingerprint,
                                                check)
            write_manifest(folder, config, data.fingerprint, signature, sidecars)
            print(f"imported {len(sidecars)} experts into {folder}")
        barrier(rank)
        return folder

    recipe = recipe_from(cfg)
    logger = Logger(cfg, "buffers", rank)
    mine = [k for k in range(int(cfg.buffers.num_experts)) if k % rank.world == rank.rank]
    for k in mine:
        seed = derive_seed(int(cfg.seed), "expert", k)
        if completed_expert(folder, k, seed, recipe.epochs) is not None:
            print(f"expert {k}: complete and verified, skipped")
            continue
        model = build_model(cfg.model.name, data.channels, data.num_classes, data.resolution, seed=seed,
                            device=device, dtype=dtype, **model_options(cfg))
        generator = torch.Generator().manual_seed(seed)
        bar = tqdm(total=recipe.epochs, desc=f"expert {k} (rank {rank.rank})", unit="epoch",
                   disable=not cfg.progress, leave=False)
        started = time.perf_counter()

        def on_epoch(epoch: int, loss: float, acc: float) -> None:
            seen = epoch * len(data.train_images)
            bar.set_postfix(loss=f"{loss:.3f}", test_acc=f"{acc:.3f}",
                            img_s=f"{seen / (time.perf_counter() - started):.0f}")
            bar.update(1)
            logger.log({f"expert_{k}/train_loss": loss, f"expert_{k}/test_accuracy": acc, "epoch": epoch})

        trajectory = train_expert(model, recipe, data.train_images, data.train_labels, data.test_images,
                                  data.test_labels, generator, on_epoch)
        bar.close()
        if not all(torch.isfinite(t).all() for t in trajectory.params.values()):
            raise DistillError(f"expert {k} diverged (non-finite parameters): lower buffers.lr")
        write_expert(folder, k, trajectory.params, signature, data.fingerprint, seed,
                     trajectory.train_loss, trajectory.test_accuracy,
                     {"train_seconds": round(time.perf_counter() - started, 1),
                      "images_per_second": round(trajectory.images_per_second)})
        print(f"expert {k}: {recipe.epochs} epochs, final train loss {trajectory.train_loss[-1]:.4f}, "
              f"test acc {trajectory.test_accuracy[-1]:.4f}, {trajectory.images_per_second:.0f} img/s, "
              f"{time.perf_counter() - started:.1f} s")
    barrier(rank)
    if rank.is_main:
        sidecars = []
        for k in range(int(cfg.buffers.num_experts)):
            record = completed_expert(folder, k, derive_seed(int(cfg.seed), "expert", k), recipe.epochs)
            if record is None:
                raise DistillError(f"expert {k} is missing after training: re-run the same command")
            sidecars.append(record)
        write_manifest(folder, config, data.fingerprint, signature, sidecars)
        print(f"buffer ready: {folder} ({len(sidecars)} experts x {recipe.epochs} epochs)")
    logger.finish()
    return folder


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@friendly_errors
def main(cfg: DictConfig) -> None:
    run_buffers(cfg)


if __name__ == "__main__":
    main()
