"""A whole distillation run: initial set, the loop with periodic selection, checkpoints and resume, outputs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from distill.data.prepare import PreparedData
from distill.errors import DistillError, SettingError
from distill.evaluate.protocol import Protocol
from distill.evaluate.train import set_targets, train_and_test
from distill.io.artifact import save_artifact
from distill.io.atomic import atomic_write_json
from distill.io.checkpoint import load_checkpoint, save_checkpoint
from distill.io.pictures import save_grid
from distill.matching.init import (
    init_correct,
    init_label_logits,
    init_label_logits_one_expert,
    init_noise,
    init_real,
    synthetic_classes,
)
from distill.matching.loop import Distiller, ExpertSource, SkipLimitReached, StepRecord, run_loop
from distill.matching.settings import DistillSettings
from distill.matching.unroll import Shard
from distill.models.flat import FlatModel
from distill.models.registry import ModelSpec
from distill.seeds import derive_seed

# settings that change how long a run is or how it is watched, not the trajectory it follows
BOOKKEEPING = (
    "iterations",
    "resume",
    "checkpoint_every",
    "eval_every",
    "evaluate_initial",
    "eval_runs",
    "eval_epochs",
    "selection",
    "max_consecutive_skips",
    "memory_budget",  # which steps the `auto` engine recomputes: the same gradient to float round-off
)


def run_identity(
    settings: DistillSettings,
    model: ModelSpec,
    seed: int,
    dtype: torch.dtype,
    fingerprint: dict,
    mixed_precision: bool = False,
) -> dict:
    """Everything that shapes the trajectory of a run (not its length or bookkeeping)."""
    shaping = {k: v for k, v in asdict(settings).items() if k not in BOOKKEEPING}
    return {
        "seed": seed,
        "dtype": str(dtype).replace("torch.", ""),
        # named only when on, so that the runs (and checkpoints) made before the option keep their keys
        **({"mixed_precision": True} if mixed_precision else {}),
        "model": asdict(model),
        "distill": shaping,
        "data": fingerprint,
    }


def run_key(identity: dict) -> str:
    """Hash of a `run_identity`: a checkpoint resumes only into a run with the same key."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class DistillResult:
    """What a run produced: the selected set and the last one (each: images [N, C, H, W], label_logits
    [N, K], lr [], classes [N]), the rule that selected it, and the run's counters."""

    selected: dict[str, torch.Tensor]
    last: dict[str, torch.Tensor]
    selection: str  # "best validation accuracy", "best test accuracy" or "last iteration (no evaluation)"
    selection_split: str | None
    best: dict
    iterations: int
    skipped: int
    stopped: str | None  # why the run ended early (None: it ran all iterations)
    initial_label_accuracy: float | None
    seconds: float  # this session's, in the loop
    seconds_before: float = 0.0  # earlier sessions', up to the checkpoint this one resumed from
    checks: list[tuple[int, float]] = field(default_factory=list)  # every selection check: (iteration, score)


def initial_set(
    settings: DistillSettings, data: PreparedData, experts: ExpertSource, student: FlatModel, seed: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Initial images [N, C, H, W] and label logits [N, K] (class-major) and the labels' argmax accuracy
    (docs/method.md §2). Experts classify with their final checkpoint."""
    ipc, k = settings.ipc, data.num_classes
    counts = torch.bincount(data.train_labels.cpu(), minlength=k)
    if ipc > int(counts.min()):
        raise SettingError(
            type(settings).__name__, "ipc", f"exceeds the smallest class ({int(counts.min())} training images)", ipc
        )
    device, dtype = data.train_images.device, data.train_images.dtype
    init_seed = derive_seed(seed, "init")
    classifiers = [
        (lambda x, w=experts.params(e, experts.epochs, device).to(dtype): student(w, x)) for e in range(len(experts))
    ]
    labellers = classifiers if settings.label_init_experts is None else classifiers[: settings.label_init_experts]
    student.module.eval()
    try:
        if settings.pix_init == "real":
            images = init_real(data.train_images, data.train_labels, ipc, k, init_seed)
        elif settings.pix_init == "correct":
            images = init_correct(data.train_images, data.train_labels, ipc, k, classifiers, init_seed)
        else:
            images = init_noise((ipc * k, data.channels, *data.resolution), init_seed, device, dtype)
        classes = synthetic_classes(k, ipc, device)
        if settings.soft_labels and settings.pix_init == "real":
            logits, acc = init_label_logits_one_expert(images, classes, classifiers[0])
        elif settings.soft_labels:
            logits, acc = init_label_logits(images, classes, labellers)
        else:
            logits, acc = torch.nn.functional.one_hot(classes, k).to(dtype), 1.0
    finally:
        student.module.train()
    return images, logits, acc


def distill_set(
    data: PreparedData,
    experts: ExpertSource,
    model: ModelSpec,
    settings: DistillSettings,
    seed: int = 0,
    protocol: Protocol = Protocol(),
    checkpoint: str | Path | None = None,
    on_step: Callable[[StepRecord], None] = lambda record: None,
    on_eval: Callable[[int, float, bool], None] = lambda iteration, score, best: None,
    log: Callable[[str], None] = print,
    shard: Shard = Shard(),
    compile_training: bool = False,
    mixed_precision: bool = False,
) -> DistillResult:
    """Distil `data` through `experts` (a BufferReader, InMemoryExperts or any ExpertSource) into a set of
    `settings.ipc` images per class, on `data`'s device and dtype.

    Every `settings.eval_every` iterations a fresh `model` is trained on the current set under
    `protocol` (for `settings.eval_epochs` epochs; through torch.compile when `compile_training`) and
    scored on the split `settings.selection` names;
    the best set is the result (without evaluations: the last one). With `checkpoint` (a file path)
    the run saves its state there every `settings.checkpoint_every` iterations and, when
    `settings.resume`, continues from it. A run whose updates keep being skipped stops early
    (`stopped` says why) but still returns its sets. Under torchrun (`shard` of K ranks) every rank
    computes its slice of each minibatch and all hold the same set; rank 0 alone evaluates and
    writes the checkpoint, so a run can resume with another K. `mixed_precision=True` runs the student's
    steps and the checks' training under bfloat16 autocast (`distill.models.precision`): faster where the
    hardware has bfloat16 arithmetic, but the matching gradient is no longer exact.
    """
    if experts.epochs < settings.required_epochs:
        raise DistillError(
            f"the experts have {experts.epochs} epochs, the window needs {settings.required_epochs} "
            "(max_start_epoch - 1 + expert_epochs)"
        )
    device, dtype = data.train_images.device, data.train_images.dtype
    student = FlatModel(
        model.build(data.channels, data.num_classes, data.resolution, seed=0, device=device, dtype=dtype),
        mixed_precision=mixed_precision,
    )
    identity = run_identity(settings, model, seed, dtype, data.fingerprint, mixed_precision)
    key = run_key(identity)
    if shard.world > 1 and shard.from_first(key) != key:
        raise DistillError(f"rank {shard.rank} runs other settings than rank 0: give every rank the same command")
    ckpt = Path(checkpoint) if checkpoint is not None else None
    state = load_checkpoint(ckpt, key, identity) if ckpt is not None and settings.resume and ckpt.is_file() else None
    if state is None:
        # every rank starts from rank 0's set (the same, unless ranks round differently)
        images, logits, label_acc = shard.from_first(
            initial_set(settings, data, experts, student, seed) if shard.rank == 0 else None
        )
        images, logits = images.to(device), logits.to(device)
        log(f"initialised {len(images)} images ({settings.pix_init}); label argmax accuracy {label_acc:.3f}")
    else:
        images, logits = state["images"].to(device), state["label_logits"].to(device)
        label_acc = state.get("initial_label_accuracy")  # absent in checkpoints from before it was kept
    distiller = Distiller(
        settings,
        experts,
        student,
        images,
        logits,
        settings.lr_teacher,
        synthetic_classes(data.num_classes, settings.ipc, device),
        data.num_classes,
        derive_seed(seed, "distill"),
        shard,
    )
    before = 0.0
    if state is not None:
        distiller.load_state_dict(state)
        before = float(state.get("seconds", 0.0))  # absent in checkpoints from before it was kept
        log(f"resumed from {ckpt} at iteration {distiller.iteration}")

    split = (
        (data.val_images, data.val_labels)
        if settings.selection == "validation"
        else (data.test_images, data.test_labels)
    )
    if settings.eval_every > 0 and len(split[0]) == 0:
        raise DistillError("selection on the validation split needs a dataset with val_per_class > 0")

    def evaluate(synthetic: dict) -> float:
        return shard.from_first(score(synthetic) if shard.rank == 0 else None)

    def score(synthetic: dict) -> float:
        scores = []
        for r in range(settings.eval_runs):
            run_seed = derive_seed(seed, f"distill-eval/{distiller.iteration}", r)
            net = model.build(
                data.channels, data.num_classes, data.resolution, seed=run_seed, device=device, dtype=dtype
            )
            mode = protocol.labels if settings.soft_labels else "hard"  # one-hot "logits" are not soft labels
            scores.append(
                train_and_test(
                    net,
                    synthetic["images"],
                    set_targets(synthetic, mode),
                    *split,
                    protocol,
                    float(synthetic["lr"]),
                    run_seed,
                    epochs=settings.eval_epochs,
                    compiled=compile_training,
                    mixed_precision=mixed_precision,
                )
            )
        return sum(scores) / len(scores)

    def save(dist: Distiller) -> None:
        if ckpt is not None and shard.rank == 0:
            # the loop's seconds so far, all sessions: what a resumed run's outputs report it cost
            state = {
                **dist.state_dict(),
                "seconds": before + time.perf_counter() - started,
                "initial_label_accuracy": label_acc,
            }
            save_checkpoint(ckpt, state, key, identity)

    started, stopped = time.perf_counter(), None
    try:
        run_loop(
            distiller,
            settings.iterations,
            settings.eval_every,
            evaluate,
            save,
            settings.checkpoint_every,
            on_step,
            on_eval,
            settings.evaluate_initial,
        )
    except SkipLimitReached as exc:
        stopped = str(exc)  # like the reference, a run that cannot improve still ends with its outputs
    chosen = distiller.best_set is not None
    return DistillResult(
        selected=distiller.best_set if chosen else distiller.current_set(),
        last=distiller.current_set(),
        selection=f"best {settings.selection} accuracy" if chosen else "last iteration (no evaluation)",
        selection_split=settings.selection if chosen else None,
        best=dict(distiller.best) if chosen else {"score": None, "iteration": distiller.iteration},
        iterations=distiller.iteration,
        skipped=distiller.skipped,
        stopped=stopped,
        initial_label_accuracy=label_acc,
        seconds=time.perf_counter() - started,
        seconds_before=before,
        checks=list(distiller.checks),
    )


def write_run_outputs(
    folder: str | Path,
    result: DistillResult,
    data: PreparedData,
    model: ModelSpec,
    settings: DistillSettings,
    extra_meta: dict | None = None,
) -> Path:
    """distilled.safetensors (the selected set), distilled_last.safetensors, grid.png and summary.json
    in `folder`; `extra_meta` (e.g. the whole config, the buffer used) goes into both artifacts."""
    out = Path(folder)
    base = {
        "dataset_fingerprint": data.fingerprint,
        "model": model.name,
        "model_options": dict(model.options),
        "ipc": settings.ipc,
        "soft_labels": settings.soft_labels,
        "method": settings.method,
        "distill": asdict(settings),
        **(extra_meta or {}),
    }
    state = data.preprocessor.state()
    save_artifact(
        out / "distilled.safetensors",
        result.selected,
        {
            **base,
            "iteration": result.best["iteration"],
            "selection": result.selection,
            "selection_split": result.selection_split,
            "selection_score": result.best["score"],
        },
        state,
    )
    save_artifact(
        out / "distilled_last.safetensors",
        result.last,
        {**base, "iteration": result.iterations, "selection": "last iteration"},
        state,
    )
    save_grid(out / "grid.png", data.preprocessor.invert(result.selected["images"]), data.num_classes)
    atomic_write_json(
        out / "summary.json",
        {
            "iterations": result.iterations,
            "skipped_updates": result.skipped,
            "best": result.best,
            "checks": [{"iteration": i, "score": s} for i, s in result.checks],
            "selection": result.selection,
            "final_syn_lr": float(result.last["lr"]),
            "initial_label_accuracy": result.initial_label_accuracy,
            "seconds_this_session": round(result.seconds, 2),
            "seconds_in_all": round(result.seconds_before + result.seconds, 2),
            "stopped_early": result.stopped,
        },
    )
    return out
