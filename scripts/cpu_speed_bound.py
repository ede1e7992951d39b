"""How much faster than the official code can an exact gradient be on this machine? A compute bound.

Usage:
    .venv/bin/python scripts/cpu_speed_bound.py [--reference-dir PATH] [--cases bound|tiny]
        [--threads N] [--iterations 3] [--out results/cpu_speed_bound.md]

The speed issue asks for the default engine at >= 2x the official DATM code's speed. This script
asks whether any exact engine could get there on the machine it runs on. For each case it

1. counts the matrix FLOPs (convolutions and matrix products of the forward, backward and double
   backward; `torch.utils.flop_counter`) of one iteration of the `plain` engine, which does the
   official code's computation: N create_graph student steps, then one backward. A cheaper exact
   engine would need these products too: the recomputing engines (`flat`, `compiled`) do more;
2. measures the best rate this machine reaches on the case's own convolutions run alone: the
   ConvNet's three convolution layers at the case's batch, forward and backward (input and weight
   gradients), in the standard and the channels-last layout, the faster layout per layer;
3. divides: the FLOPs at that rate are the seconds the convolutions alone would take if every kernel
   ran at its best isolated speed, with nothing else (no norm, pooling, DSA, element-wise work or
   launch overhead). That is a lower bound on any exact engine's time, so the official code's time
   over it is an upper bound on any exact engine's speed-up.

The official code's time comes from its own iteration body (`--reference-dir`, timed by
scripts/bench_vs_reference.py in a fresh process); without a checkout, the `plain` engine's time
stands in for it (results/speed_vs_reference.md measured the two within 1-16 % of each other).
FLOPs grow exactly linearly in N (every student step has the same shapes), so they are counted at
N = 1 and 2 and extrapolated. Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (channels, size, IPC, N, width): the speed table's cases the official code can run on 20 GB
CASES = {
    "bound": [(3, 32, 1, 20, 128), (3, 32, 10, 20, 128), (1, 28, 10, 20, 128)],
    "tiny": [(1, 8, 1, 2, 4)],
}


def _bench_module():
    """scripts/bench_vs_reference.py as a module (its children, case names, expert vectors)."""
    spec = importlib.util.spec_from_file_location("bench_vs_reference", ROOT / "scripts" / "bench_vs_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plain_distiller(case):
    """(A `Distiller` with the `plain` engine on `case`'s shapes, its ConvNet module), set up as
    bench_vs_reference's project child sets up every engine (random images, soft labels and expert
    vectors, DSA on). The thread count is the measuring child process's, never set here."""
    return _bench_module().build_distiller(tuple(case), "plain", "cpu")


def iteration_flops(case) -> int:
    """Matrix FLOPs of one `plain` iteration on `case`, exact for its N (counted at N = 1 and 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for steps in (1, 2):
        distiller, _ = plain_distiller((*case[:3], steps, case[4]))
        with FlopCounterMode(display=False) as counter:
            distiller.step()
        counts.append(counter.get_total_flops())
    per_step = counts[1] - counts[0]
    return counts[0] + per_step * (case[3] - 1)


def conv_layers(model) -> list:
    """The model's convolution modules in forward order."""
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def best_conv_rate(case, repeats: int = 5) -> dict:
    """FLOP/s of the case's convolution layers run alone at its batch: for each layer the faster of the
    standard and channels-last layouts (forward + backward to input and weight; the first layer, whose
    input needs no gradient, backward to the weight only), median of `repeats`. Returns the FLOPs and
    seconds of one such forward+backward of all layers and their rate."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    channels, size, ipc, _, _ = case
    _, model = plain_distiller(case)
    n = 10 * ipc
    total_flops, total_seconds, side = 0, 0.0, size
    for index, conv in enumerate(conv_layers(model)):
        weight, bias = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
        grad_input = index > 0
        best = None
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(n, conv.in_channels, side, side).to(memory_format=layout)
            w = weight.clone().to(memory_format=layout)

            def once():
                out = torch.nn.functional.conv2d(x, w, bias, conv.stride, conv.padding)
                torch.ops.aten.convolution_backward(
                    torch.ones_like(out),
                    x,
                    w,
                    [w.shape[0]],
                    conv.stride,
                    conv.padding,
                    conv.dilation,
                    False,
                    [0, 0],
                    1,
                    [grad_input, True, True],
                )

            with FlopCounterMode(display=False) as counter:
                once()
            once()  # warm-up
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                once()
                times.append(time.perf_counter() - started)
            seconds = statistics.median(times)
            if best is None or seconds < best[1]:
                best = (counter.get_total_flops(), seconds)
        total_flops += best[0]
        total_seconds += best[1]
        side //= 2  # the ConvNet pools by 2 after every layer
    return {"flops": total_flops, "seconds": total_seconds, "rate": total_flops / total_seconds}


def plain_seconds(case, iterations: int) -> float:
    """Median seconds of one `plain` iteration on `case` after a warm-up (in this process)."""
    distiller, _ = plain_distiller(case)
    distiller.step()
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        distiller.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def child(spec: dict) -> dict:
    """One case, measured in this (fresh) process: FLOPs, best conv rate, `plain` seconds."""
    case = tuple(spec["case"])
    rate = best_conv_rate(case)
    flops = iteration_flops(case)
    return {
        "flops": flops,
        "conv": rate,
        "plain_seconds": plain_seconds(case, spec["iterations"]),
    }


def run_child(spec: dict) -> dict:
    """`child(spec)` in a fresh process with `spec['threads']` threads; {'error': line} when it fails."""
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        return {"error": lines[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bound_row(case, measured: dict, reference_seconds: float | None) -> dict:
    """The table's numbers for one case: the lower bound on an exact engine's seconds and the largest
    speed-up over the reference (or over `plain` when no reference time is given)."""
    bound = measured["flops"] / measured["conv"]["rate"]
    baseline = reference_seconds if reference_seconds is not None else measured["plain_seconds"]
    return {
        "case": case,
        "gflop": measured["flops"] / 1e9,
        "rate_gflops": measured["conv"]["rate"] / 1e9,
        "bound_seconds": bound,
        "baseline_seconds": baseline,
        "plain_seconds": measured["plain_seconds"],
        "reference_seconds": reference_seconds,
        "max_speedup": baseline / bound,
        "baseline_rate_share": bound / baseline,
    }


def report(rows: list[dict], args, seconds: float) -> str:
    """The markdown report of `rows` (from `bound_row`)."""
    import torch

    bench = _bench_module()
    from distill.evaluate.records import git_commit

    source = (
        "the official iteration body (`--reference-dir`)"
        if args.reference_dir
        else "the `plain` engine (no reference checkout given)"
    )
    lines = [
        "# How fast can an exact gradient be on this machine?",
        "",
        f"Command: `.venv/bin/python scripts/cpu_speed_bound.py{' --reference-dir PATH' if args.reference_dir else ''} "
        f"--cases {args.cases} --threads {args.threads} --iterations {args.iterations}`  ",
        f"Project commit: {git_commit()}  ",
        f"torch {torch.__version__}, {args.threads} threads, device cpu  ",
        f"Machine: {bench.machine_line('cpu')}  ",
        f"Wall time: {seconds / 60:.1f} min",
        "",
        "Per case: the matrix FLOPs (convolutions and matrix products, forward, backward and double "
        "backward) of one iteration of the official computation (`plain`: N create_graph steps, one "
        "backward); the best rate this machine reaches on the case's own convolutions run alone (best "
        "layout per layer, forward + backward); the seconds those FLOPs need at that rate, with no other "
        f"work at all (a lower bound on any exact engine); the reference's seconds, from {source}; "
        "their ratio, the largest speed-up an exact engine could reach here. ConvNet depth 3, instance "
        "norm, 10 classes, every synthetic image in every step, DSA on.",
        "",
        "| case | GFLOP / iteration | best conv rate GFLOP/s | lower bound s/it | reference s/it | `plain` s/it "
        "| largest possible speed-up | reference's share of the bound rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {bench.case_name(row['case'])} | failed: {row['error']} | | | | | | |")
            continue
        reference = f"{row['reference_seconds']:.2f}" if row["reference_seconds"] is not None else "-"
        lines.append(
            f"| {bench.case_name(row['case'])} | {row['gflop']:.0f} | {row['rate_gflops']:.0f} | "
            f"{row['bound_seconds']:.2f} | {reference} | {row['plain_seconds']:.2f} | "
            f"{row['max_speedup']:.2f}x | {100 * row['baseline_rate_share']:.0f} % |"
        )
    lines += [
        "",
        "- The bound leaves out everything but matrix products: instance norm and its double backward, "
        "pooling, ReLU masks, DSA, the optimiser. Real engines need that work too, so the true ceiling is "
        "lower than the last-but-one column.",
        "- The recomputing engines (`flat`, `compiled`, the default) do one more forward and backward per "
        "student step than `plain`, so their own ceiling is lower still; `auto` with a budget that holds "
        "every step does `plain`'s products.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", default=None, help="a checkout of NUS-HPC-AI-Lab/DATM (commit 97ae510)")
    parser.add_argument("--cases", choices=sorted(CASES), default="bound")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "results" / "cpu_speed_bound.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # a fresh process: its thread count is the measurement's (never set in a caller's process)
        spec = json.loads(args.child)
        import torch

        torch.set_num_threads(spec["threads"])
        print(json.dumps(child(spec)))
        return 0
    if args.reference_dir and not (Path(args.reference_dir) / "reparam_module.py").is_file():
        print(
            f"error: {args.reference_dir} is not a DATM checkout (no reparam_module.py): pass --reference-dir PATH",
            file=sys.stderr,
        )
        return 2
    from distill.io.atomic import atomic_write_bytes

    bench = _bench_module()
    started, rows = time.perf_counter(), []
    for case in CASES[args.cases]:
        spec = {"case": list(case), "threads": args.threads, "iterations": args.iterations}
        reference = None
        if args.reference_dir:
            timed = bench.measure(
                {**spec, "device": "cpu", "reference_dir": str(Path(args.reference_dir).resolve()), "role": "reference"}
            )
            reference = timed.get("median")
        measured = run_child(spec)
        row = {"case": case, **measured} if "error" in measured else bound_row(case, measured, reference)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "case"}), flush=True)
    text = report(rows, args, time.perf_counter() - started)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(args.out), text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
