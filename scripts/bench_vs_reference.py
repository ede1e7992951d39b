"""Seconds per distillation iteration: the official DATM code against this project, side by side.

Usage:
    .venv/bin/python scripts/bench_vs_reference.py --reference-dir PATH [--cases table|quick|tiny]
        [--engines compiled,auto] [--memory-budget GIB] [--iterations 3] [--threads N] [--device cpu|cuda]
        [--start K] [--time-limit SECONDS] [--child-timeout SECONDS] [--out FILE]

PATH is a checkout of https://github.com/NUS-HPC-AI-Lab/DATM (measured at commit 97ae510); none of
its code is part of this repository. The script imports its `networks.ConvNet`, `ReparamModule`,
`DiffAugment` and `ParamDiffAug` and times the body of one iteration of its distillation loop (new
student, `syn_steps` create_graph steps on DSA-augmented images with soft labels, matching loss,
backward, three optimiser steps) against this project's whole `Distiller.step()` on the same shapes:
ConvNet depth 3 with instance norm, 10 classes, `batch_syn` = every synthetic image, random expert
vectors. Every measurement runs in its own fresh process (same interpreter, same torch build, same
thread count), reference and project alternating; each reports the median over `--iterations`
iterations after one warm-up iteration (which for the compiled engine includes compilation, reported
separately) and its peak memory (RSS on CPU, allocated memory on CUDA). Nothing else should run on
the machine meanwhile.

One change to the reference's path: with 1-channel images, DSA's crop can hand the model a batch
whose strides look channels-last (a 1-channel tensor is both), convolution then keeps that layout and
the reference ConvNet's `.view` fails on current torch; the harness copies such a batch to standard
strides first (one small copy per step).

The official utils import torchvision at module level but never use it in the timed loop: when
torchvision is absent a stand-in module is installed, and the report says so.

An engine name may carry `+cudagraphs` (e.g. `auto+cudagraphs`, CUDA only): the same engine with
Inductor's CUDA graphs switched on for every compiled program (`torch._inductor.config.triton.cudagraphs`,
what `torch.compile(mode="reduce-overhead")` sets). Since commit 0934deb `compiled` does this by itself
on a GPU, so there `compiled+cudagraphs` equals `compiled`; it is how the GPU table measured it before.
`+bf16` (e.g. `compiled+bf16`) runs the student's steps under bfloat16 autocast (`mixed_precision`):
faster where the hardware has bfloat16 arithmetic, but not exact, so such a column is reported beside
the exact engines, never in their place.
The report is rewritten after every case, so a run cut short (`--time-limit`, a killed job) still
leaves its rows; `--start K` finishes such a run from its K-th case.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (channels, size, IPC, N, width); the table of the speed issue
CASES = {
    "table": [
        (3, 32, 1, 20, 128),
        (3, 32, 1, 80, 128),
        (3, 32, 10, 20, 128),
        (3, 32, 10, 40, 128),
        (3, 32, 10, 80, 128),
        (1, 28, 10, 20, 128),
    ],
    "quick": [(3, 32, 1, 20, 128), (3, 32, 10, 20, 128), (1, 28, 10, 20, 32)],
    "tiny": [(1, 8, 1, 2, 4)],
}
NUM_CLASSES = 10
STRATEGY = "color_crop_cutout_flip_scale_rotate"


# ----------------------------------------------------------------------------------------------- children
def _peak_memory_mib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(run, iterations: int, device: str) -> dict:
    import torch

    def once() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - started

    first = once()
    times = [once() for _ in range(iterations)]
    return {"first": first, "times": times, "median": statistics.median(times), "peak_mib": _peak_memory_mib(device)}


def _expert_vectors(num_params: int, generator, device: str):
    import torch

    start = 0.05 * torch.randn(num_params, generator=generator)
    return start.to(device), (start + 0.01 * torch.randn(num_params, generator=generator)).to(device)


def _install_torchvision_stand_in() -> bool:
    """Put an empty `torchvision` (datasets, transforms, utils) in sys.modules when none is installed."""
    if importlib.util.find_spec("torchvision") is not None:
        return False
    package = types.ModuleType("torchvision")
    for name in ("datasets", "transforms", "utils"):
        sub = types.ModuleType(f"torchvision.{name}")
        setattr(package, name, sub)
        sys.modules[f"torchvision.{name}"] = sub
    sys.modules["torchvision"] = package
    return True


def reference_child(spec: dict) -> dict:
    """Time the official iteration body, imported from spec['reference_dir']."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(spec["threads"])
    stand_in = _install_torchvision_stand_in()
    sys.path.insert(0, spec["reference_dir"])
    from networks import ConvNet  # noqa: E402  (the reference checkout)
    from reparam_module import ReparamModule  # noqa: E402
    from utils.utils_baseline import DiffAugment, ParamDiffAug  # noqa: E402

    channels, size, ipc, steps, width = spec["case"]
    device = spec["device"]
    generator = torch.Generator().manual_seed(0)
    n = NUM_CLASSES * ipc
    images = torch.randn(n, channels, size, size, generator=generator).to(device).requires_grad_(True)
    labels = torch.randn(n, NUM_CLASSES, generator=generator).to(device).requires_grad_(True)
    syn_lr = torch.tensor(0.01, device=device).requires_grad_(True)
    optimisers = [
        torch.optim.SGD([images], lr=100.0, momentum=0.5),
        torch.optim.SGD([syn_lr], lr=1e-5, momentum=0.5),
        torch.optim.SGD([labels], lr=2.0, momentum=0.9),
    ]
    dsa_param = ParamDiffAug()

    def build():
        return ConvNet(
            channel=channels,
            num_classes=NUM_CLASSES,
            net_width=width,
            net_depth=3,
            net_act="relu",
            net_norm="instancenorm",
            net_pooling="avgpooling",
            im_size=(size, size),
        )

    num_params = sum(p.numel() for p in build().parameters())
    start, target = _expert_vectors(num_params, generator, device)

    def iteration():
        student = ReparamModule(build().to(device))
        student.train()
        params = [start.clone().requires_grad_(True)]
        chunks: list = []
        for _ in range(steps):
            if not chunks:
                chunks = list(torch.split(torch.randperm(n), n))
            batch = chunks.pop()
            x = DiffAugment(images[batch], STRATEGY, param=dsa_param)
            if channels == 1:  # see the module docstring
                x = x.clone(memory_format=torch.contiguous_format)
            logits = student(x, flat_param=params[-1])
            targets = F.softmax(labels[batch], dim=1)
            loss = torch.sum(-F.log_softmax(logits, dim=1) * targets) / len(batch)
            (g,) = torch.autograd.grad(loss, params[-1], create_graph=True)
            params.append(params[-1] - syn_lr * g)
        matching = (F.mse_loss(params[-1], target, reduction="sum") / num_params) / (
            F.mse_loss(start, target, reduction="sum") / num_params
        )
        for opt in optimisers:
            opt.zero_grad()
        matching.backward()
        for opt in optimisers:
            opt.step()

    return {**_timed(iteration, spec["iterations"], device), "torchvision_stand_in": stand_in}


class _RandomExperts:
    """An expert source whose every (expert, epoch) vector is fixed random noise around a start point."""

    def __init__(self, start, target, epochs: int):
        self.start, self.target, self.epochs = start, target, epochs

    def __len__(self) -> int:
        return 1

    def params(self, k: int, epoch: int, device="cpu"):
        return (self.start if epoch == 0 else self.target).to(device)


def build_distiller(case, engine: str, device: str, memory_budget: float = 2.0, mixed_precision: bool = False):
    """This project's `Distiller` on `case` (channels, size, IPC, N, width) with `engine`: random images,
    soft labels and expert vectors (seed 0), DSA on, every iteration matching one fixed start -> target
    pair; `mixed_precision` runs the student under bfloat16 autocast. Returns (distiller, the student's
    ConvNet module)."""
    import torch

    from distill.matching.init import synthetic_classes
    from distill.matching.loop import Distiller
    from distill.matching.settings import DistillSettings
    from distill.models import FlatModel, build_model

    channels, size, ipc, steps, width = case
    generator = torch.Generator().manual_seed(0)
    n = NUM_CLASSES * ipc
    model = build_model("convnet", channels, NUM_CLASSES, size, seed=0, device=device, width=width, depth=3)
    student = FlatModel(model, mixed_precision=mixed_precision)
    images = torch.randn(n, channels, size, size, generator=generator).to(device)
    labels = torch.randn(n, NUM_CLASSES, generator=generator).to(device)
    start, target = _expert_vectors(student.num_params, generator, device)
    # window [0, 1) with M = 1: every iteration matches the fixed start -> target pair
    settings = DistillSettings(
        syn_steps=steps,
        expert_epochs=1,
        min_start_epoch=0,
        current_max_start_epoch=1,
        max_start_epoch=1,
        expansion_end_iteration=1,
        lr_img=100.0,
        lr_lr=1e-5,
        lr_y=2.0,
        threshold=1e9,
        engine=engine,
        dsa_strategy=STRATEGY,
        memory_budget=memory_budget,
    )
    distiller = Distiller(
        settings,
        _RandomExperts(start, target, 1),
        student,
        images,
        labels,
        0.01,
        synthetic_classes(NUM_CLASSES, ipc, device),
        NUM_CLASSES,
        seed=0,
    )
    return distiller, model


def project_child(spec: dict) -> dict:
    """Time this project's `Distiller.step()` with engine spec['engine'] (optionally `+cudagraphs` and / or
    `+bf16`); any warning raised (e.g. a compile fallback) is returned under 'warnings'."""
    import warnings

    import torch

    torch.set_num_threads(spec["threads"])
    engine, *variants = spec["engine"].split("+")
    unknown = sorted(set(variants) - {"cudagraphs", "bf16"})
    if unknown:
        raise ValueError(f"unknown engine variant {unknown[0]!r} (known: cudagraphs, bf16)")
    if "cudagraphs" in variants:
        import torch._inductor.config as inductor_config

        inductor_config.triton.cudagraphs = True  # what mode="reduce-overhead" sets
    distiller, _ = build_distiller(
        tuple(spec["case"]), engine, spec["device"], spec["memory_budget"], mixed_precision="bf16" in variants
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _timed(distiller.step, spec["iterations"], spec["device"])
    messages = sorted({str(w.message).splitlines()[0][:200] for w in caught if w.category is not DeprecationWarning})
    return {**result, "warnings": messages}


# ----------------------------------------------------------------------------------------------- parent
def measure(spec: dict, timeout: float | None = None) -> dict:
    """Run one child in a fresh process (killed after `timeout` s); returns its JSON result or
    {'error': one line}."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if proc.returncode < 0:
        return {"error": f"killed by signal {-proc.returncode}" + (" (out of memory)" if proc.returncode == -9 else "")}
    if proc.returncode != 0:
        lines = [
            line for line in proc.stderr.strip().splitlines() if "Error" in line
        ] or proc.stderr.strip().splitlines()
        return {"error": (lines[-1].strip() if lines else f"exit status {proc.returncode}")[:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def case_name(case) -> str:
    channels, size, ipc, steps, width = case
    return f"{channels}x{size}x{size}, IPC {ipc}, N={steps}" + ("" if width == 128 else f", width {width}")


def machine_line(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}), {os.cpu_count()} CPU cores"
    return f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} CPU cores, no GPU used"


def seconds_cell(t: float) -> str:
    """Two decimals from 1 s up, three significant digits below (tiny cases)."""
    return f"{t:.2f}" if t >= 1 else f"{t:.3g}"


def report(
    results: list[dict], args, commit: str, torch_version: str, seconds: float, skipped: list | tuple = ()
) -> str:
    """The markdown of results/speed_vs_reference.md from the measured rows (`skipped`: cases the time
    limit left out)."""
    engines = args.engines
    lines = [
        "# Speed against the official DATM code",
        "",
        f"Command: `.venv/bin/python scripts/bench_vs_reference.py --reference-dir PATH --cases {args.cases} "
        + (f"--start {args.start} " if getattr(args, "start", 1) != 1 else "")
        + f"--engines {','.join(engines)} --iterations {args.iterations} --threads {args.threads} "
        f"--device {args.device} --memory-budget {args.memory_budget:g}"
        + (f" --time-limit {args.time_limit:g}" if args.time_limit else "")
        + "`  ",
        "Reference: NUS-HPC-AI-Lab/DATM, checkout at PATH (measured against commit 97ae510), its iteration body  ",
        f"Project commit: {commit}  ",
        f"torch {torch_version}, {args.threads} threads, device {args.device}  ",
        f"Machine: {machine_line(args.device)}  ",
        f"Wall time of this benchmark: {seconds / 60:.1f} min",
        "",
        f"Median seconds per iteration over {args.iterations} iterations after one warm-up (the warm-up of "
        "`compiled` includes building its programs: `first` column); peak memory of the process "
        f"({'allocated CUDA memory' if args.device.startswith('cuda') else 'RSS'}). Speed-up = reference time / "
        "project time. Each cell is its own fresh process; reference and project ran alternately. "
        "ConvNet depth 3, instance norm, 10 classes, every synthetic image in every step, DSA on.",
        "",
    ]
    header = "| case | reference s/it | reference MiB |"
    rule = "|---|---|---|"
    for engine in engines:
        header += f" `{engine}` s/it | `{engine}` first s | `{engine}` MiB | speed-up |"
        rule += "---|---|---|---|"
    lines += [header, rule]
    stand_in = False
    for row in results:
        ref = row["reference"]
        stand_in = stand_in or bool(ref.get("torchvision_stand_in"))
        ref_time = ref.get("median")
        if "error" in ref:
            ref_cell = f"failed: {ref['error']}"
            ref_time = row.get("extrapolated")
            if ref_time is not None:
                ref_cell += f"; {seconds_cell(ref_time)} extrapolated"
        else:
            ref_cell = seconds_cell(ref_time)
        cells = [case_name(row["case"]), ref_cell, f"{ref['peak_mib']:.0f}" if "peak_mib" in ref else "-"]
        for engine in engines:
            ours = row[engine]
            if "error" in ours:
                cells += [f"failed: {ours['error']}", "-", "-", "-"]
                continue
            speed = f"{ref_time / ours['median']:.2f}x" if ref_time else "-"
            cells += [seconds_cell(ours["median"]), f"{ours['first']:.1f}", f"{ours['peak_mib']:.0f}", speed]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if skipped:
        notes.append(
            "Not run (the time limit passed, or the benchmark stopped, before them): "
            + "; ".join(map(case_name, skipped))
            + "."
        )
    warned = sorted({(e, w) for row in results for e in engines for w in row[e].get("warnings", ())})
    notes += [f"`{engine}` warned: {message}" for engine, message in warned]
    if any("+cudagraphs" in engine for engine in engines):
        notes.append(
            "`+cudagraphs`: the same engine with Inductor's CUDA graphs on (`torch._inductor.config.triton."
            'cudagraphs`, what `torch.compile(mode="reduce-overhead")` sets).'
        )
    if any("+bf16" in engine for engine in engines):
        notes.append(
            "`+bf16`: the same engine with the student's steps under bfloat16 autocast (`mixed_precision`). Not "
            "exact (a student step's gradient within a few per cent of float32's), so it is not the default and "
            "its speed-up does not count toward the exact engine's target."
        )
    if any("extrapolated" in row for row in results):
        notes.append(
            "Where the reference failed (e.g. out of memory), its time is extrapolated linearly in N from "
            "the same shape's two smaller N."
        )
    if stand_in:
        notes.append(
            "torchvision is not installed here: the reference's module-level `from torchvision import ...` "
            "got an empty stand-in module (torchvision is never used in the timed loop)."
        )
    if "auto" in engines:
        notes.append(
            f"`auto` keeps the compiled residuals of as many steps as fit {args.memory_budget:g} GiB "
            "(`distill.memory_budget`) and recomputes the others; `compiled`, the default, keeps none."
        )
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def extrapolate(results: list[dict]) -> None:
    """For a failed reference row, fill `extrapolated` from two successful rows of the same shape (linear in N)."""
    for row in results:
        if "error" not in row["reference"]:
            continue
        channels, size, ipc, steps, width = row["case"]
        known = sorted(
            (r["case"][3], r["reference"]["median"])
            for r in results
            if "median" in r["reference"] and r["case"][:3] == (channels, size, ipc) and r["case"][4] == width
        )
        if len(known) >= 2:
            (n1, t1), (n2, t2) = known[-2:]
            row["extrapolated"] = t1 + (t2 - t1) * (steps - n1) / (n2 - n1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference-dir",
        required=True,
        type=Path,
        help="a checkout of github.com/NUS-HPC-AI-Lab/DATM (commit 97ae510)",
    )
    parser.add_argument("--cases", choices=sorted(CASES), default="table")
    parser.add_argument(
        "--start", type=int, default=1, help="begin at this case of the set (1-based): to finish a cut-short run"
    )
    parser.add_argument("--engines", default="compiled", help="comma-separated project engines to time")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations after the warm-up (>= 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-budget", type=float, default=2.0, help="GiB the `auto` engine may keep")
    parser.add_argument("--time-limit", type=float, default=None, help="start no further case after this many seconds")
    parser.add_argument(
        "--child-timeout", type=float, default=1800.0, help="seconds after which one measurement is killed"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "speed_vs_reference.md")
    args = parser.parse_args(argv)
    args.engines = [e for e in args.engines.split(",") if e]
    for needed in ("networks.py", "reparam_module.py", "utils/utils_baseline.py"):
        if not (args.reference_dir / needed).is_file():
            print(
                f"error: {args.reference_dir / needed} not found: --reference-dir must be a checkout of "
                "github.com/NUS-HPC-AI-Lab/DATM",
                file=sys.stderr,
            )
            return 2
    import torch

    from distill.evaluate.records import git_commit
    from distill.io.atomic import atomic_write_bytes

    began = time.perf_counter()
    results: list[dict] = []
    cases, text = CASES[args.cases][args.start - 1 :], ""
    for done, case in enumerate(cases):
        if args.time_limit is not None and time.perf_counter() - began > args.time_limit:
            break
        base = {"case": list(case), "threads": args.threads, "iterations": args.iterations, "device": args.device}
        reference = {**base, "role": "reference", "reference_dir": str(args.reference_dir.resolve())}
        row = {"case": tuple(case), "reference": measure(reference, args.child_timeout)}
        for engine in args.engines:
            project = {**base, "role": "project", "engine": engine, "memory_budget": args.memory_budget}
            row[engine] = measure(project, args.child_timeout)
        results.append(row)
        print(json.dumps({"case": case_name(case), **{k: v for k, v in row.items() if k != "case"}}), flush=True)
        extrapolate(results)
        text = report(
            results, args, git_commit(), torch.__version__, time.perf_counter() - began, skipped=cases[done + 1 :]
        )
        atomic_write_bytes(args.out, text.encode())  # after every case: an interrupted run keeps its rows
    print(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child_spec = json.loads(sys.argv[2])
        child_spec["case"] = tuple(child_spec["case"])
        run = reference_child if child_spec["role"] == "reference" else project_child
        print(json.dumps(run(child_spec)))
    else:
        sys.exit(main())
