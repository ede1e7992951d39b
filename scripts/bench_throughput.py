"""Throughput of expert training (distill-buffers) and evaluation training (distill-eval) against the
bare model's forward+backward on the same batches (target: both >= 80 % of bare), and of K networks
trained at once in one vmapped pass (`buffers.parallel`, `eval.parallel`) against one at a time, and of
training through torch.compile (`compile_training=true`) against eager on the CPU benchmark's shapes.

Usage: .venv/bin/python scripts/bench_throughput.py  -> prints and writes results/throughput.md
Data: the embedded digits (8x8) and Fashion-MNIST-shaped random data (1x28x28, 6,000 images).
"""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from distill.buffers.recipe import ExpertRecipe, train_expert, train_experts_stacked
from distill.data import load_dataset
from distill.data.preprocess import fit_preprocessor
from distill.evaluate.protocol import Protocol
from distill.evaluate.records import git_commit
from distill.evaluate.train import train_and_test, train_and_test_stacked, train_on_set
from distill.io.atomic import atomic_write_bytes
from distill.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def bare_rate(model, images, labels, batch, epochs):
    """img/s of plain forward + backward + SGD step over shuffled resident batches (no augmentation)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    n = len(images)
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n)
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(images[idx]), labels[idx]).backward()
            opt.step()
    return n * epochs / (time.perf_counter() - started)


def case(name, images, labels, width, depth, expert_epochs, eval_images, eval_epochs):
    res = images.shape[-1]
    make = lambda: build_model("convnet", images.shape[1], 10, res, seed=0, width=width, depth=depth)  # noqa: E731
    bare_rate(make(), images[:512], labels[:512], 256, 1)  # warm-up
    bare = bare_rate(make(), images, labels, 256, expert_epochs)
    traj = train_expert(
        make(),
        ExpertRecipe(epochs=expert_epochs),
        images,
        labels,
        images[:0],
        labels[:0],
        torch.Generator().manual_seed(0),
    )
    small_x, small_y = eval_images
    bare_small = bare_rate(make(), small_x, small_y, 256, eval_epochs)
    started = time.perf_counter()
    train_on_set(make(), small_x, small_y, Protocol(epochs=eval_epochs - 1), 0.01, torch.Generator().manual_seed(0))
    eval_rate = len(small_x) * eval_epochs / (time.perf_counter() - started)
    return [
        (f"{name}: expert training (DSA, SGD, per-epoch recording)", traj.images_per_second, bare),
        (f"{name}: evaluation training on {len(small_x)} images (DSA, SGD+momentum, schedule)", eval_rate, bare_small),
    ]


def stacked_case(name, images, labels, width, depth, expert_epochs, eval_images, eval_epochs, count=4):
    """K experts / evaluation repeats one at a time against all K at once (img/s summed over the K)."""
    res = images.shape[-1]
    make = lambda seed: build_model("convnet", images.shape[1], 10, res, seed=seed, width=width, depth=depth)  # noqa: E731
    recipe = ExpertRecipe(epochs=expert_epochs)
    seeds = list(range(count))
    started = time.perf_counter()
    for seed in seeds:
        train_expert(make(seed), recipe, images, labels, images[:0], labels[:0], torch.Generator().manual_seed(seed))
    one = count * len(images) * expert_epochs / (time.perf_counter() - started)
    started = time.perf_counter()
    train_experts_stacked(
        [make(s) for s in seeds],
        recipe,
        images,
        labels,
        images[:0],
        labels[:0],
        [torch.Generator().manual_seed(s) for s in seeds],
    )
    many = count * len(images) * expert_epochs / (time.perf_counter() - started)
    small_x, small_y = eval_images
    protocol = Protocol(epochs=eval_epochs - 1)
    started = time.perf_counter()
    for seed in seeds:
        train_and_test(make(seed), small_x, small_y, small_x[:0], small_y[:0], protocol, 0.01, seed)
    eval_one = count * len(small_x) * eval_epochs / (time.perf_counter() - started)
    started = time.perf_counter()
    train_and_test_stacked(
        [make(s) for s in seeds], [small_x] * count, [small_y] * count, small_x[:0], small_y[:0], protocol, 0.01, seeds
    )
    eval_many = count * len(small_x) * eval_epochs / (time.perf_counter() - started)
    return [
        (f"{name}: {count} experts one at a time / at once (vmap)", one, many),
        (f"{name}: {count} evaluation repeats on {len(small_x)} images one at a time / at once", eval_one, eval_many),
    ]


def compiled_case(name, images, labels, width, depth, epochs, eval_sizes, eval_epochs, batch=256):
    """Expert training (`epochs` over `images`) and evaluation training (`eval_epochs` on the first n images,
    n in `eval_sizes`) eager and through torch.compile; each measured after a one-epoch warm-up, whose
    seconds (compiling, for the compiled side) are reported. Rows: (case, eager img/s, compiled img/s,
    compiled warm-up s)."""
    res = images.shape[-1]
    make = lambda: build_model("convnet", images.shape[1], 10, res, seed=0, width=width, depth=depth)  # noqa: E731
    torch._dynamo.reset()  # each case compiles its own graphs, never past dynamo's limit per function

    def seconds(job) -> float:
        started = time.perf_counter()
        job()
        return time.perf_counter() - started

    def expert(compiled: bool, count: int):
        recipe = ExpertRecipe(epochs=count, batch_size=batch)
        gen = torch.Generator().manual_seed(0)
        return lambda: train_expert(make(), recipe, images, labels, images[:0], labels[:0], gen, compiled=compiled)

    def evaluation(compiled: bool, n: int, count: int):
        protocol = Protocol(epochs=max(count - 1, 1), batch_size=batch)  # count passes (the warm-up: 2)
        generator = torch.Generator().manual_seed(0)
        x, y = images[:n], labels[:n]
        return lambda: train_on_set(make(), x, y, protocol, 0.01, generator, compiled=compiled)

    jobs = [(f"{name}: expert training, batch {min(batch, len(images))}", len(images), epochs, expert)]
    jobs += [
        (f"{name}: evaluation training on {n} images", n, eval_epochs, functools.partial(evaluation, n=n))
        for n in eval_sizes
    ]
    rows = []
    for label, n, count, job in jobs:
        rates, warm = {}, {}
        for compiled in (False, True):
            warm[compiled] = seconds(job(compiled=compiled, count=1))
            rates[compiled] = n * count / seconds(job(compiled=compiled, count=count))
        rows.append((label, rates[False], rates[True], warm[True]))
    return rows


def main() -> None:
    torch.manual_seed(0)
    rows = []
    digits = load_dataset("digits")
    pre = fit_preprocessor(digits.train_images, zca=False)
    x, y = pre.apply(digits.train_images), digits.train_labels
    rows += case("digits 1x8x8, ConvNet w32 d2", x, y, 32, 2, 10, (x[:100], y[:100]), 100)
    fx = torch.randn(6000, 1, 28, 28)
    fy = torch.arange(6000) % 10
    rows += case("Fashion-MNIST-shaped 1x28x28, ConvNet w32 d3", fx, fy, 32, 3, 2, (fx[:500], fy[:500]), 20)
    stacked = stacked_case("digits 1x8x8, ConvNet w32 d2", x, y, 32, 2, 5, (x[:100], y[:100]), 50)
    stacked += stacked_case(
        "Fashion-MNIST-shaped 1x28x28, ConvNet w32 d3", fx[:3000], fy[:3000], 32, 3, 1, (fx[:500], fy[:500]), 10
    )
    compiled = compiled_case(
        "Fashion-MNIST-shaped 1x28x28, ConvNet w16 d3 (the CPU benchmark's)", fx, fy, 16, 3, 2, (10, 100, 500), 100
    )
    compiled += compiled_case("digits 1x8x8, ConvNet w32 d2", x, y, 32, 2, 10, (10, 100), 200)
    lines = [
        "# Training throughput against the bare model",
        "",
        "Command: `.venv/bin/python scripts/bench_throughput.py`  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "",
        "Bare = forward + backward + SGD step on shuffled resident batches of 256, no augmentation. Target: >= 80 %.",
        "",
        "| case | img/s | bare img/s | ratio |",
        "|---|---|---|---|",
    ]
    for name, rate, bare in rows:
        lines.append(f"| {name} | {rate:.0f} | {bare:.0f} | {100 * rate / bare:.0f} % |")
    lines += [
        "",
        "K networks trained at once in one vmapped pass (`torch.func.stack_module_state` + `vmap`, "
        "each with its own seed, data order and augmentation; equal to one at a time up to round-off) against "
        "the same K one at a time; img/s summed over the K:",
        "",
        "| case | one at a time img/s | at once img/s | speed-up |",
        "|---|---|---|---|",
    ]
    for name, one, many in stacked:
        lines.append(f"| {name} | {one:.0f} | {many:.0f} | {many / one:.2f}x |")
    lines += [
        "",
        "Training through torch.compile (`compile_training=true`: experts, evaluation networks and validation "
        "checks; the network's forward and backward compiled once per batch shape, DSA eager) against eager, "
        "one network at a time; img/s after a one-epoch warm-up, whose seconds on the compiled side are in the "
        "last column: compiling, about 10-25 s per batch shape in a fresh process, less where Inductor's on-disk "
        "cache holds the graph from an earlier one; later networks of the same shapes reuse the compiled code:",
        "",
        "| case | eager img/s | compiled img/s | speed-up | compiled warm-up s |",
        "|---|---|---|---|---|",
    ]
    for name, eager, fast, warm in compiled:
        lines.append(f"| {name} | {eager:.0f} | {fast:.0f} | {fast / eager:.2f}x | {warm:.1f} |")
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(ROOT / "results" / "throughput.md", text.encode())
    print(text)


if __name__ == "__main__":
    main()
