"""distill-eval: train fresh networks on a distilled set and on baselines; write records and tables."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from distill.data.preprocess import Preprocessor
from distill.errors import DistillError
from distill.evaluate.baselines import random_subset
from distill.evaluate.protocol import Protocol
from distill.evaluate.records import make_record, read_records, write_record
from distill.evaluate.tables import plot_accuracy_vs_ipc, write_table
from distill.evaluate.train import train_and_test
from distill.io.artifact import load_artifact
from distill.jobs.common import CONFIG_DIR, PreparedData, choose_dtype, friendly_errors, model_options, prepare_data
from distill.jobs.ranks import choose_device, gather_objects, init_distributed
from distill.jobs.distill import protocol_from, set_targets
from distill.jobs.validate import validate_config
from distill.models import build_model
from distill.seeds import derive_seed


@dataclass(frozen=True)
class EvalJob:
    """One training run: which set (distilled/random/full), label mode, architecture, run index."""

    set_kind: str
    labels: str
    architecture: str
    run: int


def check_artifact_matches(meta: dict, data_fingerprint: dict, path: str) -> None:
    """Refuse an artifact distilled from another dataset, resolution or class count."""
    theirs = meta.get("dataset_fingerprint", {})
    for key in ("dataset", "resolution", "channels", "num_classes"):
        if theirs.get(key) != data_fingerprint.get(key):
            raise DistillError(f"{path} was distilled on {key}={theirs.get(key)!r}, but this run loads "
                               f"{key}={data_fingerprint.get(key)!r}: set dataset={theirs.get('dataset')} or pick "
                               "the matching artifact")


def plan_jobs(cfg: DictConfig, has_artifact: bool, soft_artifact: bool) -> list[EvalJob]:
    """Every run to do, in a fixed order (ranks take every world-th job)."""
    jobs = []
    modes = [m for m in cfg.eval.label_modes if soft_artifact or m == "hard"] or ["hard"]
    label_modes = modes if has_artifact else []
    for arch in cfg.eval.architectures:
        for r in range(int(cfg.eval.runs)):
            jobs += [EvalJob("distilled", mode, arch, r) for mode in label_modes]
            jobs += [EvalJob(kind, "hard", arch, r) for kind in cfg.eval.baselines]
    return jobs


def run_evaluate(cfg: DictConfig) -> list[dict]:
    """Evaluate `cfg.eval.artifact` (if any) and the baselines; returns the records written."""
    validate_config(cfg, "eval")
    rank = init_distributed(cfg.device)
    device, dtype = choose_device(cfg.device, rank), choose_dtype(cfg.dtype)
    synthetic, meta, preprocessor = None, {}, None
    if cfg.eval.artifact:
        synthetic, pre_state, meta = load_artifact(cfg.eval.artifact)
        stored = meta["dataset_fingerprint"]["preprocess"]
        preprocessor = Preprocessor.from_state(stored["kind"], pre_state, stored["zca_eps"],
                                               stored.get("statistics", "measured"))
    data = prepare_data(cfg, device, dtype, preprocessor)
    if synthetic is not None:
        check_artifact_matches(meta, data.fingerprint, cfg.eval.artifact)
        synthetic = {k: v.to(device) for k, v in synthetic.items()}
        synthetic["images"] = synthetic["images"].to(dtype)
        synthetic["label_logits"] = synthetic["label_logits"].to(dtype)
    protocol = protocol_from(cfg)
    ipc = int(meta["ipc"]) if synthetic is not None else int(cfg.eval.ipc)
    method = (meta.get("config", {}).get("distill", {}).get("method") or "distilled") if synthetic is not None else None
    jobs = plan_jobs(cfg, synthetic is not None, bool(meta.get("soft_labels", False)))

    results = {}
    for index, job in enumerate(jobs):
        if index % rank.world == rank.rank:
            started = time.perf_counter()
            accuracy, lr, seed = run_job(cfg, job, data, synthetic, protocol, ipc, device, dtype)
            results[index] = (accuracy, lr, seed, time.perf_counter() - started)
            print(f"{job.set_kind:9s} {job.labels:4s} {job.architecture:10s} run {job.run}: acc {accuracy:.4f} "
                  f"({results[index][3]:.1f} s)")
    results = {k: v for part in gather_objects(results, rank) for k, v in part.items()}
    records = []
    if rank.is_main:
        groups: dict = {}
        for index, job in enumerate(jobs):
            groups.setdefault((job.set_kind, job.labels, job.architecture), []).append(results[index])
        folder = Path(cfg.paths.results) / "records"
        for (kind, labels, arch), runs in groups.items():
            proto = {**protocol.to_json(), "labels": labels,
                     "epochs": int(cfg.eval.full_epochs) if kind == "full" else protocol.epochs}
            record = make_record(
                dataset=data.fingerprint["dataset"], set_kind=kind, method=method if kind == "distilled" else kind,
                ipc=None if kind == "full" else ipc, labels=labels, architecture=arch, protocol=proto,
                lr=runs[0][1], seeds=[r[2] for r in runs], accuracies=[r[0] for r in runs],
                seconds=sum(r[3] for r in runs),
                artifact_sha256=meta.get("sha256") if kind == "distilled" else None,
                extra={"artifact": str(cfg.eval.artifact) if kind == "distilled" else None,
                       "selection": meta.get("selection") if kind == "distilled" else None,
                       "preprocess": data.fingerprint["preprocess"]})
            write_record(folder, record)
            records.append(record)
            print(f"{kind} ({labels} labels) {arch}: {100 * record['mean']:.2f} ± {100 * record['std']:.2f} %")
        update_tables(cfg, data.fingerprint["dataset"])
    return records


def run_job(cfg: DictConfig, job: EvalJob, data: PreparedData, synthetic: dict | None, protocol: Protocol, ipc: int,
            device: torch.device, dtype: torch.dtype) -> tuple[float, float, int]:
    """Train one fresh network for `job`; returns (test accuracy, lr used, seed)."""
    seed = derive_seed(int(cfg.seed), f"eval/{job.set_kind}/{job.labels}/{job.architecture}", job.run)
    epochs = None
    if job.set_kind == "distilled":
        images, targets = synthetic["images"], set_targets(synthetic, job.labels)
        lr = float(protocol.lr) if protocol.lr is not None else float(synthetic["lr"])
    elif job.set_kind == "random":
        images, targets = random_subset(data.train_images, data.train_labels, ipc, data.num_classes, seed)
        lr = protocol.baseline_lr
    else:
        images, targets, lr = data.train_images, data.train_labels, protocol.baseline_lr
        epochs = int(cfg.eval.full_epochs)
    if lr <= 0:
        raise DistillError(f"evaluation lr must be > 0 (got {lr}): set protocol.lr")
    # the distillation architecture keeps its configured options (width, depth...); others use their defaults
    options = model_options(cfg) if job.architecture == cfg.model.name else {}
    model = build_model(job.architecture, data.channels, data.num_classes, data.resolution, seed=seed,
                        device=device, dtype=dtype, **options)
    return train_and_test(model, images, targets, data.test_images, data.test_labels, protocol, lr, seed,
                          epochs), lr, seed


def update_tables(cfg: DictConfig, dataset: str) -> None:
    """Rebuild the dataset's markdown table (and accuracy-vs-IPC plot) from all its records."""
    results = Path(cfg.paths.results)
    records = read_records(results / "records", dataset)
    table = Path(cfg.eval.table)
    write_table(table, records, f"{dataset}: distilled sets against baselines",
                "Written by `distill-eval` from the JSON records in `records/`; every number is a measured run.")
    plot = plot_accuracy_vs_ipc(results / f"{dataset}_accuracy_vs_ipc.png", records, dataset)
    print(f"table: {table}" + (f"; plot: {plot}" if plot else ""))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@friendly_errors
def main(cfg: DictConfig) -> None:
    run_evaluate(cfg)


if __name__ == "__main__":
    main()
