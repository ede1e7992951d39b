"""What a student step costs against the images it takes: one distillation iteration of the default engine
at the CPU benchmark's IPC 10 shapes (ConvNet width 16, 100 one-channel 28x28 images, DSA, soft labels)
for student steps N x minibatch, and the share of it spent inside the two step programs.

Usage: .venv/bin/python scripts/bench_minibatch.py [--rounds 5]  -> prints and writes results/minibatch_cost.md
All cases run in ONE process (this machine's speed drifts between minutes), in alternation, `rounds`
iterations each after two warm-up iterations (compilation), the order switching every round. The table
gives each case's median seconds per iteration, per step and per image passed through the student.
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
CASES = ((20, 100), (80, 25), (80, 100), (20, 25))  # (student steps N, images per step)
STRATEGY = "color_crop_cutout_flip_scale_rotate"


def measure(
    cases=CASES, rounds: int = 5, width: int = 16, images: int = 100, size: int = 28, compile: bool = True
) -> dict[tuple[int, int], dict[str, float]]:
    """(N, minibatch) -> {"seconds": median s per iteration, "program_share": the share of the timed
    iterations spent in the gradient and adjoint programs} for one `compile`d engine per case, on a
    ConvNet of `width` and `images` random one-channel images of `size` x `size` in 10 classes."""
    import torch

    from distill.matching.programs import StepPrograms
    from distill.matching.unroll import make_plan, match_programs
    from distill.models import FlatModel, build_model

    torch.manual_seed(0)
    student = FlatModel(build_model("convnet", 1, 10, size, seed=0, width=width, depth=3))
    start = student.flatten()
    target = start + 0.01 * torch.randn_like(start)
    x, logits, lr = torch.randn(images, 1, size, size), torch.randn(images, 10), torch.tensor(0.01)
    in_programs = {case: 0.0 for case in cases}

    def engine_for(case):
        programs = StepPrograms(student, compile=compile)
        for name in ("gradient", "adjoint"):

            def timed(*args, _run=getattr(programs, name)):
                began = time.perf_counter()
                out = _run(*args)
                in_programs[case] += time.perf_counter() - began
                return out

            setattr(programs, name, timed)
        return partial(match_programs, programs)

    engines = {case: engine_for(case) for case in cases}

    def iteration(case, seed: int) -> float:
        steps, batch = case
        plan = make_plan(images, batch, steps, torch.Generator().manual_seed(seed), STRATEGY).on("cpu", size, size)
        began = time.perf_counter()
        engines[case](start, target, x, logits, None, lr, plan)
        return time.perf_counter() - began

    for case in cases:  # warm-up: compilation and first-call allocations
        for seed in range(2):
            iteration(case, seed)
    in_programs.update({case: 0.0 for case in cases})
    times = {case: [] for case in cases}
    for r in range(rounds):
        for case in cases if r % 2 == 0 else tuple(reversed(cases)):
            times[case].append(iteration(case, 100 + r))
    return {
        case: {"seconds": statistics.median(times[case]), "program_share": in_programs[case] / sum(times[case])}
        for case in cases
    }


def report(results: dict[tuple[int, int], dict[str, float]], rounds: int, seconds: float) -> str:
    """The markdown table of `measure`'s results, with how it was made."""
    import torch

    lines = [
        "# Student steps against their images: one distillation iteration at the CPU benchmark's IPC 10 shapes",
        "",
        f"Command: `.venv/bin/python scripts/bench_minibatch.py --rounds {rounds}` ({seconds / 60:.1f} min)  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads  ",
        "Engine `compiled` (the default), ConvNet width 16, 100 random 1x28x28 images, soft labels, DSA; "
        f"median of {rounds} iterations after two warm-up ones, the cases in alternation in one process.",
        "",
        "| N | images per step | s per iteration | ms per step | µs per image-step | in the step programs |",
        "|---|---|---|---|---|---|",
    ]
    for (steps, batch), r in results.items():
        lines.append(
            f"| {steps} | {batch} | {r['seconds']:.3f} | {1000 * r['seconds'] / steps:.1f} | "
            f"{1e6 * r['seconds'] / (steps * batch):.0f} | {100 * r['program_share']:.0f} % |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    began = time.perf_counter()
    results = measure(rounds=rounds)
    text = report(results, rounds, time.perf_counter() - began)
    print(text)
    (ROOT / "results" / "minibatch_cost.md").write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
