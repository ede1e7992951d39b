"""ConvNet's 2x2 average pooling: the project's `AvgPool2x2` (a matrix product, eager on CPU) against ATen's
`nn.AvgPool2d(2, 2)`, in the training loops and the gradient engine that use it.

Usage: .venv/bin/python scripts/bench_pooling.py [--rounds 7]  -> prints and writes results/pooling.md
This machine's speed drifts by 20 % and more between minutes, more than the effect measured, so each
case runs in ONE process that holds both networks (the same weights, only the pooling module differs)
and times them in alternation, `rounds` times each, which one goes first switching every round. The
table gives each pooling's median and the median of the per-round ratios. Data: random images of the
benchmark's shapes (1x28x28, 3x32x32).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POOLINGS = ("aten", "matrix")
# name -> (what, channels, resolution, width, size): expert training (one epoch on `size` images),
# evaluation training (20 epochs on `size` images) or one `plain` engine unroll at IPC `size`, N = 20
CASES = {
    "expert training, 1x28x28, ConvNet w16 (img/s)": ("expert", 1, 28, 16, 2000),
    "evaluation training on 500 images, 1x28x28, ConvNet w16 (img/s)": ("evaluate", 1, 28, 16, 500),
    "expert training, 3x32x32, ConvNet w128 (img/s)": ("expert", 3, 32, 128, 256),
    "engine `plain`, 1x28x28, ConvNet w16, IPC 10, N = 20 (s/it)": ("plain", 1, 28, 16, 10),
}


def child(case: str, rounds: int) -> dict[str, list[float]]:
    """Both poolings timed on `case`, alternating, `rounds` times each: pooling -> img/s or s/it per round."""
    import torch
    from torch import nn

    from distill.buffers.recipe import ExpertRecipe, train_expert
    from distill.evaluate.protocol import Protocol
    from distill.evaluate.train import train_on_set
    from distill.matching.unroll import make_engine, make_plan
    from distill.models import FlatModel, build_model
    from distill.models.layers import AvgPool2x2

    what, channels, resolution, width, size = CASES[case]

    def network(pooling: str) -> nn.Module:
        model = build_model("convnet", channels, 10, resolution, seed=0, width=width, depth=3)
        for i, layer in enumerate(model.features):
            if isinstance(layer, AvgPool2x2) and pooling == "aten":
                model.features[i] = nn.AvgPool2d(2, 2)
        return model

    torch.manual_seed(0)
    images = torch.randn(max(size, 10 * size), channels, resolution, resolution)
    labels = torch.arange(len(images)) % 10

    def once(pooling: str) -> float:
        if what == "expert":
            x, y = images[:size], labels[:size]
            recipe = ExpertRecipe(epochs=1)
            return train_expert(network(pooling), recipe, x, y, x[:0], y[:0], torch.Generator()).images_per_second
        if what == "evaluate":
            started = time.perf_counter()
            train_on_set(network(pooling), images[:size], labels[:size], Protocol(epochs=19), 0.01, torch.Generator())
            return size * 20 / (time.perf_counter() - started)
        student = FlatModel(network(pooling))
        start = student.flatten()
        target = start + 0.01 * torch.randn(start.shape, generator=torch.Generator().manual_seed(1))
        x, logits = images[: 10 * size], torch.randn(10 * size, 10, generator=torch.Generator().manual_seed(2))
        plan = make_plan(len(x), None, 20, torch.Generator().manual_seed(0), "color_crop_cutout_flip_scale_rotate")
        engine = make_engine(what, student)
        started = time.perf_counter()
        engine(start, target, x, logits, None, torch.tensor(0.01), plan)
        return time.perf_counter() - started

    for pooling in POOLINGS:
        once(pooling)  # warm-up
    out: dict[str, list[float]] = {p: [] for p in POOLINGS}
    for r in range(rounds):
        for pooling in POOLINGS if r % 2 == 0 else POOLINGS[::-1]:
            out[pooling].append(once(pooling))
    return out


def measure(case: str, rounds: int) -> dict[str, list[float]]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, str(rounds)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(rounds: int) -> None:
    import torch

    from distill.evaluate.records import git_commit
    from distill.io.atomic import atomic_write_bytes

    started = time.perf_counter()
    lines = [
        "# 2x2 average pooling: matrix product against ATen's kernel",
        "",
        f"Command: `.venv/bin/python scripts/bench_pooling.py --rounds {rounds}`  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{os.cpu_count()} threads  ",
        "",
        "ConvNet depth 3, instance norm, DSA on; random images. `aten` = `nn.AvgPool2d(2, 2)`, `matrix` = "
        "`AvgPool2x2` (the default). Each case is one process holding both networks, timed in alternation "
        f"{rounds} times each; medians, and the median of the per-round speed-ups.",
        "",
        "| case | aten | matrix | speed-up (per-round range) |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        by = measure(case, rounds)
        seconds = case.endswith("(s/it)")
        ratios = [a / m if seconds else m / a for a, m in zip(by["aten"], by["matrix"])]
        digits = 2 if seconds else 0
        aten, matrix = statistics.median(by["aten"]), statistics.median(by["matrix"])
        lines.append(
            f"| {case} | {aten:.{digits}f} | {matrix:.{digits}f} | "
            f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        f"Wall time: {(time.perf_counter() - started) / 60:.1f} min. Under `torch.compile` (the `compiled` engine's "
        "programs) `AvgPool2x2` hands over to ATen's pooling, so that engine is not in the table.",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(ROOT / "results" / "pooling.md", text.encode())
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--rounds", type=int, default=7)
        main(parser.parse_args().rounds)
