"""ConvNet's 2x2 average pooling: the project's `AvgPool2x2` (a matrix product, eager on CPU) against ATen's
`nn.AvgPool2d(2, 2)`, in the training loops and gradient engines that use it.

Usage: .venv/bin/python scripts/bench_pooling.py [--rounds 3]  -> prints and writes results/pooling.md
Each measurement is its own fresh process; the two poolings alternate (odd rounds in the other order),
and the table gives each one's median over the rounds. Data: random images of the benchmark's shapes
(1x28x28, 3x32x32).
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
# name -> (what, channels, resolution, width, size): expert training on `size` images for one epoch,
# evaluation training on `size` images for 20 epochs, or one unroll of an engine at IPC `size`, N = 20
CASES = {
    "expert training, 1x28x28, ConvNet w16 (img/s)": ("expert", 1, 28, 16, 6000),
    "evaluation training on 500 images, 1x28x28, ConvNet w16 (img/s)": ("evaluate", 1, 28, 16, 500),
    "expert training, 3x32x32, ConvNet w128 (img/s)": ("expert", 3, 32, 128, 1000),
    "engine `plain`, 1x28x28, ConvNet w16, IPC 10, N = 20 (s/it)": ("plain", 1, 28, 16, 10),
    "engine `compiled`, 1x28x28, ConvNet w16, IPC 10, N = 20 (s/it)": ("compiled", 1, 28, 16, 10),
}


def child(pooling: str, case: str) -> float:
    """One measurement of `case` with `pooling` in this process: img/s or seconds per unroll."""
    import torch
    from torch import nn

    import distill.models.convnet as convnet
    from distill.buffers.recipe import ExpertRecipe, train_expert
    from distill.evaluate.protocol import Protocol
    from distill.evaluate.train import train_on_set
    from distill.matching.unroll import make_engine, make_plan
    from distill.models import FlatModel, build_model

    if pooling == "aten":
        make_pool = convnet.make_pool
        convnet.make_pool = lambda kind: nn.AvgPool2d(2, 2) if kind == "avgpooling" else make_pool(kind)
    what, channels, resolution, width, size = CASES[case]
    torch.manual_seed(0)
    model = build_model("convnet", channels, 10, resolution, seed=0, width=width, depth=3)
    if what == "expert":
        images, labels = torch.randn(size, channels, resolution, resolution), torch.arange(size) % 10
        empty = images[:0], labels[:0]
        train_expert(model, ExpertRecipe(epochs=1), images[:512], labels[:512], *empty, torch.Generator())  # warm-up
        model = build_model("convnet", channels, 10, resolution, seed=0, width=width, depth=3)
        return train_expert(model, ExpertRecipe(epochs=1), images, labels, *empty, torch.Generator()).images_per_second
    if what == "evaluate":
        images, labels = torch.randn(size, channels, resolution, resolution), torch.arange(size) % 10
        started = time.perf_counter()
        train_on_set(model, images, labels, Protocol(epochs=19), 0.01, torch.Generator().manual_seed(0))
        return size * 20 / (time.perf_counter() - started)
    student = FlatModel(model)
    start = student.flatten()
    target = start + 0.01 * torch.randn_like(start)
    images, logits = torch.randn(10 * size, channels, resolution, resolution), torch.randn(10 * size, 10)
    plan = make_plan(len(images), None, 20, torch.Generator().manual_seed(0), "color_crop_cutout_flip_scale_rotate")
    engine = make_engine(what, student)
    engine(start, target, images, logits, None, torch.tensor(0.01), plan)  # warm-up (and compilation)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        engine(start, target, images, logits, None, torch.tensor(0.01), plan)
        times.append(time.perf_counter() - started)
    return min(times)


def measure(pooling: str, case: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", pooling, case],
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
    results: dict[str, dict[str, list[float]]] = {case: {p: [] for p in POOLINGS} for case in CASES}
    for r in range(rounds):
        for case in CASES:
            for pooling in POOLINGS if r % 2 == 0 else POOLINGS[::-1]:  # neither always goes first
                results[case][pooling].append(measure(pooling, case))
                print(case, pooling, results[case][pooling][-1], flush=True)
    lines = [
        "# 2x2 average pooling: matrix product against ATen's kernel",
        "",
        f"Command: `.venv/bin/python scripts/bench_pooling.py --rounds {rounds}`  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{os.cpu_count()} threads  ",
        f"Wall time: {(time.perf_counter() - started) / 60:.1f} min",
        "",
        "ConvNet depth 3, instance norm, DSA on; random images. `aten` = `nn.AvgPool2d(2, 2)`, `matrix` = "
        "`AvgPool2x2` (the default; under `torch.compile` it hands over to ATen's pooling). Median over "
        f"{rounds} fresh processes per cell, the two alternating, each going first in every other round.",
        "",
        "| case | aten | matrix | speed-up |",
        "|---|---|---|---|",
    ]
    for case, by in results.items():
        aten, matrix = statistics.median(by["aten"]), statistics.median(by["matrix"])
        speedup = aten / matrix if case.endswith("(s/it)") else matrix / aten
        digits = 2 if case.endswith("(s/it)") else 0
        lines.append(f"| {case} | {aten:.{digits}f} | {matrix:.{digits}f} | {speedup:.2f}x |")
    lines += [
        "",
        "- The `compiled` engine's programs use ATen's pooling in both columns (the matrix product hands over "
        "under `torch.compile`), so its row shows how far the machine's noise moves a figure here.",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(ROOT / "results" / "pooling.md", text.encode())
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--rounds", type=int, default=3)
        main(parser.parse_args().rounds)
