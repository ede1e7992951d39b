"""Seconds per distillation iteration and peak memory of the gradient engines.

Usage: .venv/bin/python scripts/bench_engines.py [--quick]  -> prints and writes results/engines.md
Grid: engine {plain, flat, compiled, auto} x IPC {1, 10} x N {10, 20, 40, 80} (quick: width 32, N {10, 40})
on MNIST-shaped (1x28x28) and CIFAR-shaped (3x32x32) inputs with ConvNet widths 32 and 128 (cases
estimated above a budget are skipped and listed). Each case runs in its own process; peak memory is that
process's peak RSS minus the peak RSS of the same process without the unroll (model, data and expert
vectors only).
Also: engine `plain` against the bare maths (the same N create_graph steps and one backward written
inline on pre-drawn batches): target <= 1.2x.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_SECONDS = 40.0  # skip a case whose estimated time per iteration is above this
ENGINE_NAMES = ("plain", "flat", "compiled", "auto")  # `auto` with its default memory budget (2 GiB)


def child(spec: dict) -> dict:
    import torch

    from distill.matching.loss import matching_loss, soft_cross_entropy
    from distill.matching.unroll import make_engine, make_plan
    from distill.models import FlatModel, build_model

    torch.manual_seed(0)
    c, r = spec["shape"]
    student = FlatModel(build_model("convnet", c, 10, r, seed=0, width=spec["width"], depth=3))
    start = student.flatten()
    target = start + 0.01 * torch.randn_like(start)
    images, logits = torch.randn(10 * spec["ipc"], c, r, r), torch.randn(10 * spec["ipc"], 10)
    lr = torch.tensor(0.01)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    strategy = "" if spec["mode"] in ("bare", "engine_nodsa") else "color_crop_cutout_flip_scale_rotate"
    plan = make_plan(len(images), None, spec["steps"], torch.Generator().manual_seed(0), strategy)
    engine = make_engine(spec.get("engine", "plain"), student)
    if spec["mode"] == "baseline":
        return {"rss_kib": base}

    def bare_maths():
        x = images.detach().requires_grad_(True)
        y = logits.detach().requires_grad_(True)
        w = start.detach().requires_grad_(True)
        probs = torch.softmax(y, 1)
        for batch in plan.batches:
            (g,) = torch.autograd.grad(soft_cross_entropy(student(w, x[batch]), probs[batch]), w, create_graph=True)
            w = w - lr * g
        torch.autograd.grad(matching_loss(w, start, target), [x, y])

    run = bare_maths if spec["mode"] == "bare" else (lambda: engine(start, target, images, logits, None, lr, plan))
    run()  # warm-up
    times = []
    for _ in range(spec["repeats"]):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return {"seconds": min(times), "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def measure(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(quick: bool) -> None:
    from distill.evaluate.records import git_commit
    from distill.io.atomic import atomic_write_bytes

    shapes = {"MNIST 1x28x28": (1, 28), "CIFAR 3x32x32": (3, 32)}
    widths = (32,) if quick else (32, 128)
    steps_grid = (10, 40) if quick else (10, 20, 40, 80)
    rows, skipped, ratios = [], [], []
    for shape_name, shape in shapes.items():
        for width in widths:
            for ipc in (1, 10):
                per_step = None
                baseline = measure(
                    {
                        "shape": shape,
                        "width": width,
                        "ipc": ipc,
                        "steps": 1,
                        "mode": "baseline",
                        "engine": "plain",
                        "repeats": 1,
                    }
                )["rss_kib"]
                for steps in steps_grid:
                    if per_step is not None and per_step * steps > BUDGET_SECONDS:
                        skipped.append(
                            f"{shape_name}, width {width}, IPC {ipc}, N={steps} (est. {per_step * steps:.0f} s/it)"
                        )
                        continue
                    result = {}
                    for engine in ENGINE_NAMES:
                        m = measure(
                            {
                                "shape": shape,
                                "width": width,
                                "ipc": ipc,
                                "steps": steps,
                                "mode": "engine",
                                "engine": engine,
                                "repeats": 2,
                            }
                        )
                        result[engine] = (m["seconds"], (m["rss_kib"] - baseline) / 1024)
                    per_step = max(result["flat"][0], result["plain"][0]) / steps
                    rows.append((shape_name, width, ipc, steps, result))
                    print(rows[-1], flush=True)
                if width == 32 and ipc == 10:
                    bare = measure(
                        {
                            "shape": shape,
                            "width": width,
                            "ipc": ipc,
                            "steps": 20,
                            "mode": "bare",
                            "engine": "plain",
                            "repeats": 2,
                        }
                    )["seconds"]
                    eng = measure(
                        {
                            "shape": shape,
                            "width": width,
                            "ipc": ipc,
                            "steps": 20,
                            "mode": "bare_engine",
                            "engine": "plain",
                            "repeats": 2,
                        }
                    )["seconds"]
                    ratios.append((shape_name, bare, eng))
    lines = [
        "# Gradient engines: time per iteration and peak memory",
        "",
        f"Command: `.venv/bin/python scripts/bench_engines.py{' --quick' if quick else ''}`  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (no GPU)",
        "",
        "`plain` keeps the whole unrolled graph; `flat` keeps N parameter vectors and recomputes one step at a "
        "time on the way back (exact, same gradient); `compiled` is `flat` with each step a compiled torch.func "
        "program (the first iteration, which compiles, is not timed); `auto` is `compiled` keeping the steps' "
        "residuals within its memory budget (2 GiB, all of them here). Full-batch unroll with DSA. Memory = peak "
        "RSS of the process minus the same process without the unroll.",
        "",
        "| input | width | IPC | N | "
        + " | ".join(f"{e} s/it" for e in ENGINE_NAMES)
        + " | "
        + " | ".join(f"{e} MiB" for e in ENGINE_NAMES)
        + " |",
        "|---|---|---|---|" + "---|" * (2 * len(ENGINE_NAMES)),
    ]
    for shape_name, width, ipc, steps, r in rows:
        lines.append(
            f"| {shape_name} | {width} | {ipc} | {steps} | "
            + " | ".join(f"{r[e][0]:.2f}" for e in ENGINE_NAMES)
            + " | "
            + " | ".join(f"{r[e][1]:.0f}" for e in ENGINE_NAMES)
            + " |"
        )
    lines += ["", "Memory-flat engines, largest N against N=10 (target <= 1.3x):", ""]
    groups: dict = {}
    for shape_name, width, ipc, steps, r in rows:
        for engine in ("flat", "compiled"):
            groups.setdefault((shape_name, width, ipc, engine), {})[steps] = r[engine][1]
    for (shape_name, width, ipc, engine), by_n in groups.items():
        top = max(by_n)
        if top > 10 and by_n.get(10):
            lines.append(
                f"- `{engine}`, {shape_name}, width {width}, IPC {ipc}: N={top} {by_n[top]:.0f} MiB vs N=10 "
                f"{by_n[10]:.0f} MiB = {by_n[top] / max(by_n[10], 1e-9):.2f}x"
            )
    lines += [
        "",
        "Engine `plain` (DSA off) against the same maths written inline, width 32, IPC 10, N=20 (target <= 1.2x):",
        "",
    ]
    for shape_name, bare, eng in ratios:
        lines.append(f"- {shape_name}: bare {bare:.2f} s, engine {eng:.2f} s = {eng / bare:.2f}x")
    if skipped:
        lines += ["", "Skipped (over the time budget on this machine): " + "; ".join(skipped) + "."]
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(ROOT / "results" / "engines.md", text.encode())
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        spec = json.loads(sys.argv[2])
        if spec["mode"] == "bare_engine":
            spec = {**spec, "mode": "engine_nodsa"}
        print(json.dumps(child(spec)))
    else:
        main("--quick" in sys.argv)
