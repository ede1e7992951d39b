"""What `mixed_precision` (bfloat16 autocast) buys and costs: seconds per distillation iteration of the default
engine and training throughput, float32 against bf16 mixed, and how far the bf16 matching gradient lies from
the float32 one.

Usage: .venv/bin/python scripts/bench_mixed_precision.py [--rounds 3] [--cases all|quick]
       -> prints and writes results/mixed_precision.md

Distillation: one iteration of the `compiled` engine (`match_programs` with compiled step programs; DSA, soft
labels, random images and expert vectors, seed 0) per case, float32 and bf16 mixed alternating in ONE process
(this machine's speed drifts between minutes), `rounds` timed iterations each after two warm-up iterations
(compilation). Gradient: the bf16 iteration's image, label and lr gradients against float32's on the same
inputs and plan: cosine similarity and relative error ||bf16 - float32|| / ||float32||. Training: img/s of
SGD steps at batch 256 through a compiled forward (`TrainingForward`, as `compile_training`), no augmentation,
after a warm-up, float32 and bf16 alternating.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STRATEGY = "color_crop_cutout_flip_scale_rotate"
# (channels, size, ConvNet width, synthetic images, student steps N): the CPU benchmark's IPC 10 and 50 shapes
# at widths 16 and 32, and the speed issue's ConvNet-128 CIFAR shapes
DISTILL_CASES = {
    "quick": ((1, 28, 16, 100, 20), (1, 28, 32, 100, 20)),
    "all": ((1, 28, 16, 100, 20), (1, 28, 32, 100, 20), (3, 32, 128, 10, 20), (3, 32, 128, 100, 20)),
}
TRAIN_WIDTHS = {"quick": (16, 32), "all": (16, 32, 128)}


def distill_case(case, rounds: int) -> dict:
    """{"float32": median s/it, "bf16": median s/it, "cosine": {name: c}, "relative_error": {name: e}} for one
    (channels, size, width, images, N) case."""
    import torch

    from distill.matching.programs import StepPrograms
    from distill.matching.unroll import make_plan, match_programs
    from distill.models import FlatModel, build_model

    channels, size, width, images, steps = case
    torch.manual_seed(0)
    net = build_model("convnet", channels, 10, size, seed=0, width=width, depth=3)
    engines = {
        mode: partial(match_programs, StepPrograms(FlatModel(net, mixed_precision=mode == "bf16"), compile=True))
        for mode in ("float32", "bf16")
    }
    start = FlatModel(net).flatten()
    target = start + 0.01 * torch.randn_like(start)
    x, logits, lr = torch.randn(images, channels, size, size), torch.randn(images, 10), torch.tensor(0.01)
    plan = make_plan(images, steps, images, torch.Generator().manual_seed(0), STRATEGY)
    results = {mode: engine(start, target, x, logits, None, lr, plan) for mode, engine in engines.items()}
    for engine in engines.values():  # second warm-up: every program compiled and in cache
        engine(start, target, x, logits, None, lr, plan)
    times = {mode: [] for mode in engines}
    for r in range(rounds):
        for mode in ("float32", "bf16") if r % 2 == 0 else ("bf16", "float32"):
            began = time.perf_counter()
            engines[mode](start, target, x, logits, None, lr, plan)
            times[mode].append(time.perf_counter() - began)
    exact, mixed = results["float32"], results["bf16"]
    cosine, error = {}, {}
    for name in ("grad_images", "grad_labels", "grad_lr"):
        a, b = getattr(exact, name).double().flatten(), getattr(mixed, name).double().flatten()
        cosine[name] = float(torch.nn.functional.cosine_similarity(a, b, dim=0)) if a.numel() > 1 else float("nan")
        error[name] = float((a - b).norm() / a.norm())
    return {
        **{mode: statistics.median(t) for mode, t in times.items()},
        "cosine": cosine,
        "relative_error": error,
        "loss": (float(exact.loss), float(mixed.loss)),
    }


def training_rate(width: int, mixed_precision: bool, steps: int, batch: int = 256) -> float:
    """img/s of SGD steps on a ConvNet of `width` (1x28x28, 10 classes) through a compiled forward."""
    import torch
    import torch.nn.functional as F

    from distill.models import build_model
    from distill.models.compiled import TrainingForward

    net = build_model("convnet", 1, 10, 28, seed=0, width=width, depth=3)
    network = TrainingForward(net, compiled=True, mixed_precision=mixed_precision)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 1, 28, 28, generator=generator), torch.randint(0, 10, (batch,), generator=generator)

    def step():
        def body(forward):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(forward(x), y)
            loss.backward()
            return loss

        network.step(body)
        optimizer.step()

    for _ in range(3):
        step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - began)


def report(distill: dict, train: dict, args, seconds: float) -> str:
    """The markdown of results/mixed_precision.md."""
    import torch

    from distill.evaluate.records import git_commit

    lines = [
        "# Mixed precision (bfloat16 autocast) against float32",
        "",
        f"Command: `.venv/bin/python scripts/bench_mixed_precision.py --rounds {args.rounds} --cases {args.cases}`  ",
        f"Commit: {git_commit()}  ",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores ({cpu_model()}), no GPU used  ",
        f"Wall time: {seconds / 60:.1f} min",
        "",
        "One distillation iteration of the default engine (`compiled`: compiled step programs, DSA, soft labels, "
        "every synthetic image in every step, ConvNet depth 3, instance norm, 10 classes), float32 and "
        "`mixed_precision` alternating in one process; median seconds over "
        f"{args.rounds} iterations after two warm-up ones. The gradient columns compare the bf16 iteration's "
        "gradients with float32's on the same inputs and plan (cosine similarity / relative error of the whole "
        "vector; the lr gradient is a scalar, so only its relative error).",
        "",
        "| case | float32 s/it | bf16 mixed s/it | speed-up | image gradient: cosine / rel. error | "
        "label gradient: cosine / rel. error | lr gradient: rel. error |",
        "|---|---|---|---|---|---|---|",
    ]
    for (channels, size, width, images, steps), row in distill.items():
        c, e = row["cosine"], row["relative_error"]
        lines.append(
            f"| {channels}x{size}x{size}, width {width}, {images} images, N={steps} | {row['float32']:.2f} | "
            f"{row['bf16']:.2f} | {row['float32'] / row['bf16']:.2f}x | {c['grad_images']:.4f} / "
            f"{e['grad_images']:.3f} | {c['grad_labels']:.4f} / {e['grad_labels']:.3f} | {e['grad_lr']:.3f} |"
        )
    lines += [
        "",
        "First-order training (experts, evaluation networks, validation checks): img/s of SGD steps at batch 256 "
        "through a compiled forward, 1x28x28, no augmentation.",
        "",
        "| ConvNet width | float32 img/s | bf16 mixed img/s | speed-up |",
        "|---|---|---|---|",
    ]
    for width, (full, mixed) in train.items():
        lines.append(f"| {width} | {full:.0f} | {mixed:.0f} | {mixed / full:.2f}x |")
    lines += [
        "",
        "- bf16 mixed is not exact: it is an option (`mixed_precision=true`), never the default, and the speed "
        "issue's target counts the exact engine only. Whether the sets it makes are as good is a question for a "
        "distillation run, not for this table (`results/fashion_mnist_ipc50_study_datm_ipc50_w32_bf16.md`).",
        "- The speed-up needs bfloat16 arithmetic in hardware (here AVX512-BF16); without it bf16 runs slower.",
    ]
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed iterations per case and precision")
    parser.add_argument("--cases", choices=sorted(DISTILL_CASES), default="all")
    parser.add_argument("--training-steps", type=int, default=40, help="timed SGD steps per width and precision")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "mixed_precision.md")
    args = parser.parse_args(argv)
    import torch

    from distill.io.atomic import atomic_write_bytes

    began = time.perf_counter()
    distill = {}
    for case in DISTILL_CASES[args.cases]:
        distill[case] = distill_case(case, args.rounds)
        torch._dynamo.reset()  # a fresh compile budget per case
        print(case, {k: v for k, v in distill[case].items() if k in ("float32", "bf16")}, flush=True)
    train = {}
    for width in TRAIN_WIDTHS[args.cases]:
        rates = {True: [], False: []}
        for r in range(2):
            for mixed in (False, True) if r == 0 else (True, False):
                rates[mixed].append(training_rate(width, mixed, args.training_steps))
        train[width] = (max(rates[False]), max(rates[True]))
        torch._dynamo.reset()
        print("training width", width, train[width], flush=True)
    text = report(distill, train, args, time.perf_counter() - began)
    atomic_write_bytes(args.out, text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
