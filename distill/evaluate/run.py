"""Evaluating a distilled set beside its baselines: fresh networks trained under one protocol, several seeds."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from distill.data.prepare import PreparedData
from distill.errors import DistillError
from distill.evaluate.baselines import random_subset
from distill.evaluate.protocol import Protocol
from distill.evaluate.records import make_record
from distill.evaluate.resume import FinishedRuns, set_digest
from distill.evaluate.train import set_targets, train_and_test, train_and_test_stacked
from distill.models.registry import ModelSpec
from distill.parallel import Rank, gather_objects
from distill.seeds import derive_seed


@dataclass(frozen=True)
class EvalRun:
    """One training run: which set (distilled / random / full), label mode, architecture, run index."""

    set_kind: str
    labels: str
    architecture: str
    run: int


def plan_runs(
    has_set: bool,
    soft_set: bool,
    label_modes: Sequence[str],
    architectures: Sequence[str],
    runs: int,
    baselines: Sequence[str],
) -> list[EvalRun]:
    """Every run to do, in a fixed order (torchrun rank r takes runs r, r + world, ...). A hard-label
    set is evaluated with hard labels only."""
    modes = [m for m in label_modes if soft_set or m == "hard"] or ["hard"]
    plan = []
    for arch in architectures:
        for r in range(runs):
            plan += [EvalRun("distilled", mode, arch, r) for mode in (modes if has_set else [])]
            plan += [EvalRun(kind, "hard", arch, r) for kind in baselines]
    return plan


def architecture_specs(architectures: Sequence[str | ModelSpec], model: ModelSpec) -> dict[str, ModelSpec]:
    """The networks to evaluate on, by the label their runs and log lines carry, in the given order.

    A name is the distillation `model`, options included, when it is `model.name`, otherwise that model with
    its builder's defaults; a ModelSpec is exactly that network (e.g. ModelSpec("convnet", {"width": 128})
    to test a width-16 set on the published ConvNet), labelled `name(key=value, ...)` unless it is `model`.
    """
    specs: dict[str, ModelSpec] = {}
    for entry in architectures:
        if isinstance(entry, str):
            label, spec = entry, (model if entry == model.name else ModelSpec(entry))
        elif entry == model:
            label, spec = model.name, model
        else:
            options = ", ".join(f"{k}={v}" for k, v in sorted(entry.options.items()))
            label, spec = f"{entry.name}({options})", entry
        specs.setdefault(label, spec)
    return specs


def check_set_matches(meta: dict, fingerprint: dict, source: str) -> None:
    """Refuse a set distilled from another dataset, resolution or class count than `fingerprint`'s."""
    theirs = meta.get("dataset_fingerprint", {})
    for key in ("dataset", "resolution", "channels", "num_classes"):
        if theirs.get(key) != fingerprint.get(key):
            raise DistillError(
                f"{source} was distilled on {key}={theirs.get(key)!r}, but the data given has "
                f"{key}={fingerprint.get(key)!r}: load the dataset it was distilled from"
            )


def _run_inputs(
    run: EvalRun,
    data: PreparedData,
    synthetic: dict | None,
    protocol: Protocol,
    ipc: int | None,
    specs: dict[str, ModelSpec],
    full_epochs: int,
    seed: int,
):
    """What one run trains: (network, images, targets, lr, seed, epochs or None for the protocol's)."""
    run_seed = derive_seed(seed, f"eval/{run.set_kind}/{run.labels}/{run.architecture}", run.run)
    epochs = None
    if run.set_kind == "distilled":
        images, targets = synthetic["images"], set_targets(synthetic, run.labels)
        lr = float(protocol.lr) if protocol.lr is not None else float(synthetic["lr"])
    elif run.set_kind == "random":
        images, targets = random_subset(data.train_images, data.train_labels, ipc, data.num_classes, run_seed)
        lr = protocol.baseline_lr
    else:
        images, targets, lr = data.train_images, data.train_labels, protocol.baseline_lr
        epochs = full_epochs
    net = specs[run.architecture].build(
        data.channels,
        data.num_classes,
        data.resolution,
        seed=run_seed,
        device=data.test_images.device,
        dtype=data.test_images.dtype,
    )
    return net, images, targets, lr, run_seed, epochs


def _train_runs(
    runs: list[EvalRun],
    data: PreparedData,
    synthetic: dict | None,
    protocol: Protocol,
    ipc: int | None,
    specs: dict[str, ModelSpec],
    full_epochs: int,
    seed: int,
    on_pass: Callable[[], None] | None = None,
    compiled: bool = False,
    mixed_precision: bool = False,
) -> list[tuple[float, float, int]]:
    """Train fresh networks for `runs` (one set kind, label mode and architecture): one at a time
    (through torch.compile when `compiled`, under bfloat16 autocast when `mixed_precision`), or several at
    once in one vmapped pass; returns (test accuracy, lr used, seed) per run."""
    inputs = [_run_inputs(run, data, synthetic, protocol, ipc, specs, full_epochs, seed) for run in runs]
    if len(inputs) == 1:
        net, images, targets, lr, run_seed, epochs = inputs[0]
        return [
            (
                train_and_test(
                    net,
                    images,
                    targets,
                    data.test_images,
                    data.test_labels,
                    protocol,
                    lr,
                    run_seed,
                    epochs,
                    on_pass,
                    compiled,
                    mixed_precision,
                ),
                lr,
                run_seed,
            )
        ]
    if mixed_precision:
        raise DistillError("mixed_precision trains one network at a time: set eval.parallel=1")
    nets, images, targets, lrs, seeds, epochs = (list(column) for column in zip(*inputs))
    accuracies = train_and_test_stacked(
        nets, images, targets, data.test_images, data.test_labels, protocol, lrs[0], seeds, epochs[0], on_pass
    )
    return list(zip(accuracies, lrs, seeds))


def _batches(indices: list[int], plan: list[EvalRun], size: int) -> list[list[int]]:
    """`indices` grouped by (set, labels, architecture), at most `size` runs per group, in plan order."""
    by_key: dict[tuple, list[int]] = {}
    for i in indices:
        by_key.setdefault((plan[i].set_kind, plan[i].labels, plan[i].architecture), []).append(i)
    return [runs[j : j + size] for runs in by_key.values() for j in range(0, len(runs), size)]


def evaluate(
    data: PreparedData,
    synthetic: dict[str, torch.Tensor] | None = None,
    *,
    protocol: Protocol = Protocol(),
    model: ModelSpec = ModelSpec(),
    architectures: Sequence[str | ModelSpec] | None = None,
    runs: int = 5,
    seed: int = 0,
    baselines: Sequence[str] = ("random", "full"),
    label_modes: Sequence[str] = ("soft", "hard"),
    ipc: int | None = None,
    full_epochs: int = 30,
    method: str = "distilled",
    meta: dict | None = None,
    rank: Rank = Rank(),
    log: Callable[[str], None] = print,
    parallel: int = 1,
    resume_folder: str | Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    compile_training: bool = False,
    mixed_precision: bool = False,
) -> list[dict]:
    """Train `runs` fresh networks per architecture on the distilled `synthetic` set (images [N, C, H, W],
    label_logits [N, K], lr [], classes [N]; None = baselines only) and on each baseline (`random`: a
    same-size random real subset, `full`: the whole training split, `full_epochs` epochs), all under
    `protocol`, and test them on `data`'s test split.

    `model` is the distillation architecture with its options; `architectures` are names (`model.name`
    is `model`, others their defaults) or ModelSpecs with options of their own (`architecture_specs`;
    None = just `model`); `ipc` sizes the random subset (default: the set's). Under
    torchrun the runs are spread over `rank`s and every rank returns all records; `parallel` > 1
    trains up to that many repeats of one set at once in one vmapped pass; `compile_training=True` trains each
    network alone through torch.compile (the same training to float round-off), `mixed_precision=True` under
    bfloat16 autocast (not exact; named in each record's protocol). With `resume_folder` each
    finished run is kept there until the records are made, so that the same call after an interruption
    trains only the runs that had not finished (`FinishedRuns`). `on_progress(done, total)` follows this
    rank's training passes (epochs + 1 per run; a run finished before counts as done). Returns one record
    (dict: mean, std, per-run accuracies, seeds, protocol, wall_seconds, and resumed_seconds: the part of
    wall_seconds that runs finished before an interruption took) per (set, label mode, architecture).
    """
    if synthetic is not None:
        ipc = ipc or len(synthetic["classes"]) // data.num_classes
    if ipc is None and "random" in baselines:
        raise DistillError("evaluate: give ipc for the random-subset baseline (no set to take it from)")
    if not isinstance(runs, int) or runs < 1:
        raise DistillError(f"evaluate: runs must be an integer >= 1 (got {runs!r})")
    if not isinstance(parallel, int) or parallel < 1:
        raise DistillError(f"evaluate: parallel must be an integer >= 1 (got {parallel!r})")
    specs = architecture_specs(architectures or [model.name], model)
    soft = bool((meta or {}).get("soft_labels", synthetic is not None))
    plan = plan_runs(synthetic is not None, soft, label_modes, list(specs), runs, baselines)
    if synthetic is not None:
        device, dtype = data.test_images.device, data.test_images.dtype
        synthetic = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in synthetic.items()}
    # mixed precision is named only when on, so that runs and records made before the option keep matching
    trained_as = {**protocol.to_json(), **({"mixed_precision": True} if mixed_precision else {})}
    finished = FinishedRuns(
        None if resume_folder is None else Path(resume_folder),
        {
            "data": data.fingerprint,
            "set": set_digest(synthetic),
            "protocol": trained_as,
            "ipc": ipc,
            "full_epochs": full_epochs,
            "seed": seed,
        },
    )

    def described(run: EvalRun) -> dict:
        spec = specs[run.architecture]
        return {**asdict(run), "model": spec.name, "options": dict(spec.options)}

    def report(run: EvalRun, accuracy: float, seconds: float, note: str = "") -> None:
        log(
            f"{run.set_kind:9s} {run.labels:4s} {run.architecture:10s} run {run.run}: acc {accuracy:.4f} "
            f"({seconds:.1f} s{note})"
        )

    results, resumed = {}, set()
    mine = [i for i in range(len(plan)) if i % rank.world == rank.rank]
    for index in mine:
        stored = finished.get(described(plan[index]))
        if stored is not None:
            results[index] = stored
            resumed.add(index)
            report(plan[index], stored[0], stored[3], ", finished before")
    passes = {i: (full_epochs if plan[i].set_kind == "full" else protocol.epochs) + 1 for i in mine}
    passed, total = sum(passes[i] for i in results), sum(passes.values())

    def tick(runs: int) -> None:
        nonlocal passed
        passed += runs
        on_progress(passed, total)

    for group in _batches([i for i in mine if i not in results], plan, parallel):
        started = time.perf_counter()
        on_pass = None if on_progress is None else functools.partial(tick, len(group))
        done = _train_runs(
            [plan[i] for i in group],
            data,
            synthetic,
            protocol,
            ipc,
            specs,
            full_epochs,
            seed,
            on_pass,
            compile_training,
            mixed_precision,
        )
        seconds = (time.perf_counter() - started) / len(group)
        for index, (accuracy, lr, run_seed) in zip(group, done):
            results[index] = (accuracy, lr, run_seed, seconds)
            finished.put(described(plan[index]), results[index])
            report(plan[index], accuracy, seconds)
    parts = gather_objects((results, sorted(resumed)), rank)  # every rank's runs, and which it resumed
    results = {k: v for part, _ in parts for k, v in part.items()}
    resumed = {index for _, part in parts for index in part}
    groups: dict = {}
    for index, run in enumerate(plan):
        groups.setdefault((run.set_kind, run.labels, run.architecture), []).append(index)
    records = []
    for (kind, labels, label), indices in groups.items():
        done = [results[i] for i in indices]
        spec = specs[label]
        record = make_record(
            dataset=data.fingerprint["dataset"],
            set_kind=kind,
            method=method if kind == "distilled" else kind,
            ipc=None if kind == "full" else ipc,
            labels=labels,
            architecture=spec.name,
            protocol={
                **trained_as,
                "labels": labels,
                "epochs": full_epochs if kind == "full" else protocol.epochs,
            },
            lr=done[0][1],
            seeds=[r[2] for r in done],
            accuracies=[r[0] for r in done],
            seconds=sum(r[3] for r in done),
            artifact_sha256=(meta or {}).get("sha256") if kind == "distilled" else None,
            extra={
                # training seconds of the runs an earlier, interrupted call finished (in wall_seconds too)
                "resumed_seconds": round(sum(results[i][3] for i in indices if i in resumed), 2),
                "model_options": dict(spec.options),
                "selection": (meta or {}).get("selection") if kind == "distilled" else None,
                "preprocess": data.fingerprint["preprocess"],
            },
        )
        records.append(record)
    finished.forget([described(plan[i]) for i in mine])
    return records
