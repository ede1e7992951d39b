"""ConvNet's layers in the project's faster forms against the plain ATen layers they replace, in the training
loops and gradient engines that use them:
- `pooling`: `AvgPool2x2` (a matrix product, eager on CPU) against `nn.AvgPool2d(2, 2)`;
- `first-conv`: `OneChannelConv2d` (the first convolution of one-channel images, a matrix product of shifted
  copies under `torch.compile` on CPU) against `nn.Conv2d`, in the `compiled` engine.

Usage: .venv/bin/python scripts/bench_layers.py {pooling,first-conv} [--rounds 7]
       -> prints and writes results/pooling.md or results/first_conv.md
This machine's speed drifts by 20 % and more between minutes, more than the effects measured, so each
case runs in ONE process that holds both networks (the same weights, only the one layer differs)
and times them in alternation, `rounds` times each (at most 3 for the width-128 engine case), which one
goes first switching every round. The table gives each form's median and the median of the per-round
ratios. Data: random images of the benchmark's shapes (1x28x28, 3x32x32).
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
# case: (what, channels, resolution, width, size, minibatch, N): expert training (one epoch on `size`
# images), evaluation training (20 epochs on `size` images) or one engine unroll (`what` names it) at
# IPC `size`, minibatches of `minibatch` images (None: all), N student steps
LAYERS = {
    "pooling": {
        "title": "2x2 average pooling: matrix product against ATen's kernel",
        "forms": ("aten", "matrix"),
        "about": "`aten` = `nn.AvgPool2d(2, 2)`, `matrix` = `AvgPool2x2` (the default)",
        "cases": {
            "expert training, 1x28x28, ConvNet w16 (img/s)": ("expert", 1, 28, 16, 2000, None, 0),
            "evaluation training on 500 images, 1x28x28, ConvNet w16 (img/s)": ("evaluate", 1, 28, 16, 500, None, 0),
            "expert training, 3x32x32, ConvNet w128 (img/s)": ("expert", 3, 32, 128, 256, None, 0),
            "engine `plain`, 1x28x28, ConvNet w16, IPC 10, N = 20 (s/it)": ("plain", 1, 28, 16, 10, None, 20),
        },
        "note": "Under `torch.compile` (the `compiled` engine's programs) `AvgPool2x2` hands over to ATen's "
        "pooling, so that engine is not in the table.",
    },
    "first-conv": {
        "title": "The first convolution of one-channel images: shifted copies and one product against ATen's kernel",
        "forms": ("aten", "taps"),
        "about": "`aten` = `nn.Conv2d`, `taps` = `OneChannelConv2d` (the default for one-channel inputs)",
        "cases": {
            "engine `compiled`, 1x28x28, ConvNet w16, IPC 1, N = 80 (s/it)": ("compiled", 1, 28, 16, 1, None, 80),
            "engine `compiled`, 1x28x28, ConvNet w16, IPC 10, N = 20 (s/it)": ("compiled", 1, 28, 16, 10, None, 20),
            "engine `compiled`, 1x28x28, ConvNet w16, IPC 50, minibatch 100, N = 20 (s/it)": (
                "compiled",
                1,
                28,
                16,
                50,
                100,
                20,
            ),
            "engine `compiled`, 1x28x28, ConvNet w128, IPC 10, N = 20 (s/it)": ("compiled", 1, 28, 128, 10, None, 20),
        },
        "note": "The first three cases are the Fashion-MNIST CPU benchmark's distillation shapes; the last is "
        "`scripts/bench_vs_reference.py`'s 1x28x28 case. Eagerly (training, the `plain` and `flat` engines) "
        "`OneChannelConv2d` is ATen's convolution, so those are not in the table.",
    },
}


def child(layer: str, case: str, rounds: int) -> dict[str, list[float]]:
    """Both forms of `layer` timed on `case`, alternating, `rounds` times each: form -> img/s or s/it per round."""
    import torch
    from torch import nn

    from distill.buffers.recipe import ExpertRecipe, train_expert
    from distill.evaluate.protocol import Protocol
    from distill.evaluate.train import train_on_set
    from distill.matching.unroll import make_engine, make_plan
    from distill.models import FlatModel, build_model
    from distill.models.layers import AvgPool2x2, OneChannelConv2d

    what, channels, resolution, width, size, minibatch, steps = LAYERS[layer]["cases"][case]
    forms = LAYERS[layer]["forms"]

    def network(form: str) -> nn.Module:
        model = build_model("convnet", channels, 10, resolution, seed=0, width=width, depth=3)
        for i, module in enumerate(model.features):
            if isinstance(module, AvgPool2x2) and form == "aten":
                model.features[i] = nn.AvgPool2d(2, 2)
            if isinstance(module, OneChannelConv2d) and form == "aten":
                module.__class__ = nn.Conv2d  # the same parameters, ATen's forward
        return model

    torch.manual_seed(0)
    images = torch.randn(max(size, 10 * size), channels, resolution, resolution)
    labels = torch.arange(len(images)) % 10
    engines = {}

    def once(form: str) -> float:
        if what == "expert":
            x, y = images[:size], labels[:size]
            recipe = ExpertRecipe(epochs=1)
            return train_expert(network(form), recipe, x, y, x[:0], y[:0], torch.Generator()).images_per_second
        if what == "evaluate":
            started = time.perf_counter()
            train_on_set(network(form), images[:size], labels[:size], Protocol(epochs=19), 0.01, torch.Generator())
            return size * 20 / (time.perf_counter() - started)
        if form not in engines:  # one engine per form, built once: a compiled one keeps its programs
            student = FlatModel(network(form))
            engines[form] = (student, make_engine(what, student))
        student, engine = engines[form]
        start = student.flatten()
        target = start + 0.01 * torch.randn(start.shape, generator=torch.Generator().manual_seed(1))
        x, logits = images[: 10 * size], torch.randn(10 * size, 10, generator=torch.Generator().manual_seed(2))
        dsa = "color_crop_cutout_flip_scale_rotate"
        plan = make_plan(len(x), minibatch, steps, torch.Generator().manual_seed(0), dsa)
        started = time.perf_counter()
        engine(start, target, x, logits, None, torch.tensor(0.01), plan)
        return time.perf_counter() - started

    if width >= 128 and what not in ("expert", "evaluate"):
        rounds = min(rounds, 3)
    for form in forms:
        once(form)  # warm-up (and, for `compiled`, building its programs)
    out: dict[str, list[float]] = {f: [] for f in forms}
    for r in range(rounds):
        for form in forms if r % 2 == 0 else forms[::-1]:
            out[form].append(once(form))
    return out


def measure(layer: str, case: str, rounds: int) -> dict[str, list[float]]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", layer, case, str(rounds)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(layer: str, rounds: int) -> None:
    import torch

    from distill.evaluate.records import git_commit
    from distill.io.atomic import atomic_write_bytes

    spec = LAYERS[layer]
    baseline, ours = spec["forms"]
    started = time.perf_counter()
    lines = [
        f"# {spec['title']}",
        "",
        f"Command: `.venv/bin/python scripts/bench_layers.py {layer} --rounds {rounds}`  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{os.cpu_count()} threads  ",
        "",
        f"ConvNet depth 3, instance norm, DSA on; random images. {spec['about']}. Each case is one process "
        f"holding both networks, timed in alternation {rounds} times each (the width-128 engine case at most "
        "3); medians, and the median of the per-round speed-ups.",
        "",
        f"| case | {baseline} | {ours} | speed-up (per-round range) |",
        "|---|---|---|---|",
    ]
    for case in spec["cases"]:
        by = measure(layer, case, rounds)
        seconds = case.endswith("(s/it)")
        ratios = [a / m if seconds else m / a for a, m in zip(by[baseline], by[ours])]
        digits = 2 if seconds else 0
        before, after = statistics.median(by[baseline]), statistics.median(by[ours])
        lines.append(
            f"| {case} | {before:.{digits}f} | {after:.{digits}f} | "
            f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
        print(lines[-1], flush=True)
    lines += ["", f"Wall time: {(time.perf_counter() - started) / 60:.1f} min. {spec['note']}"]
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(ROOT / "results" / f"{layer.replace('-', '_')}.md", text.encode())
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("layer", choices=sorted(LAYERS))
        parser.add_argument("--rounds", type=int, default=7)
        arguments = parser.parse_args()
        main(arguments.layer, arguments.rounds)
