"""Do the engines give the same gradient on this device? A check for GPUs (tests cover the CPU).

Usage:
    .venv/bin/python scripts/check_engines_device.py [--device cuda] [--dtypes float64,float32] [--out FILE]

On a small ConvNet (depth 3, instance norm, 10 classes, 16x16 images, DSA on, N = 6 steps)
it computes one matching gradient (images, soft labels, lr) with the stored-graph `plain` engine and
with the compiled programs, with and without Inductor's CUDA graphs, each twice in a row (the second
call replays what the first recorded). float64: every engine against `plain`; float32: compiled
against the same programs run eagerly. Prints one line per comparison (largest difference over the
gradient's largest entry) and exits non-zero when one exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import sys

import torch

from distill.matching.programs import StepPrograms
from distill.matching.unroll import make_plan, match_plain, match_programs
from distill.models import FlatModel, build_model

TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}


def problem(device: str, dtype: torch.dtype, seed: int = 0):
    """(student, start, target, images, logits, lr, plan) of a small matching problem on `device`."""
    torch.manual_seed(seed)
    student = FlatModel(build_model("convnet", 3, 10, 16, seed=seed, width=16, depth=3, dtype=dtype, device=device))
    start = student.flatten()
    target = start + 0.02 * torch.randn_like(start)
    images = torch.randn(20, 3, 16, 16, dtype=dtype, device=device)
    logits = torch.randn(20, 10, dtype=dtype, device=device)
    plan = make_plan(20, None, 6, torch.Generator().manual_seed(seed), "color_crop_cutout_flip_scale_rotate")
    return student, start, target, images, logits, torch.tensor(0.05, dtype=dtype, device=device), plan


def relative_difference(a, b) -> float:
    """Largest |a - b| over the image, label and lr gradients, each over its own largest |a| entry."""
    worst = 0.0
    for name in ("grad_images", "grad_labels", "grad_lr"):
        x, y = getattr(a, name), getattr(b, name)
        worst = max(worst, float((x - y).abs().max()) / max(float(x.abs().max()), 1e-30))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="float64,float32", help="comma-separated: float64 and/or float32")
    parser.add_argument("--out", default=None, help="also write the lines to this file")
    args = parser.parse_args(argv)
    import torch._inductor.config as inductor_config

    lines, failed = [], False
    for dtype in (getattr(torch, name) for name in args.dtypes.split(",")):
        student, start, target, images, logits, lr, plan = problem(args.device, dtype)
        inputs = (start, target, images, logits, None, lr, plan)
        if dtype == torch.float64:
            reference, label = match_plain(student, *inputs), "plain"
        else:
            reference, label = match_programs(StepPrograms(student, compile=False), *inputs), "eager programs"
        for cudagraphs in (False, True):
            torch._dynamo.reset()
            inductor_config.triton.cudagraphs = cudagraphs
            programs = StepPrograms(student, compile=True)
            for call in (1, 2):
                difference = relative_difference(reference, match_programs(programs, *inputs))
                ok = difference <= TOLERANCE[dtype] and programs.compiled
                failed |= not ok
                engine = "compiled" + ("+cudagraphs" if cudagraphs else "")
                lines.append(
                    f"{'ok  ' if ok else 'FAIL'} {str(dtype)[6:]} {engine} call {call} against {label}: "
                    f"{difference:.2e} (tolerance {TOLERANCE[dtype]:.0e}, compiled={programs.compiled})"
                )
                print(lines[-1], flush=True)
        inductor_config.triton.cudagraphs = False
    if args.out:
        with open(args.out, "w") as handle:
            handle.write("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
