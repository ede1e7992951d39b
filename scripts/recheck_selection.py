"""How much luck is in a benchmark run's "best validation" set? Re-check it with fresh seeds.

A run of `scripts/reproduce_fashion_mnist.py` keeps the set whose validation check scored best, and
each check averages `distill.eval_runs` fresh networks trained `distill.eval_epochs` epochs (one network
until the benchmark's CHOICES_RULE 9, three since). The best of several noisy checks
overstates its set (a winner's curse), and it may not even be the better set. This script re-trains
each finished run's best set, and its last set, under that same check (same epochs, protocol, lr and
labels) with `--runs` new seeds, on the validation split only, and writes beside the score the run
recorded what fresh checks give.

`--epochs E` trains the fresh checks E epochs instead of the run's own check length (the rest unchanged):
whether a check as long as the evaluation's training ranks the sets otherwise than the run's checks did.

Usage:  .venv/bin/python scripts/recheck_selection.py [--dataset fashion_mnist] [--runs 2] [--only NAMES]
                                                      [--epochs E]
Reads runs/<dataset>_benchmark/<run>/ (run the benchmark first); writes results/<dataset>_selection_recheck.md
(with --epochs: results/<dataset>_selection_recheck_epochs<E>.md).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reproduce_fashion_mnist as bench_script  # noqa: E402

from distill.data.preprocess import Preprocessor  # noqa: E402
from distill.errors import DistillError  # noqa: E402
from distill.evaluate.records import git_commit  # noqa: E402
from distill.evaluate.train import set_targets, train_and_test  # noqa: E402
from distill.io.artifact import load_artifact  # noqa: E402
from distill.io.atomic import atomic_write_bytes  # noqa: E402
from distill.models.registry import ModelSpec  # noqa: E402
from distill.seeds import derive_seed  # noqa: E402
from distill.stages.common import start  # noqa: E402

ROOT = bench_script.ROOT


def fresh_checks(
    synthetic: dict, data, model: ModelSpec, protocol, epochs: int, labels: str, seeds: list[int]
) -> list[float]:
    """Validation accuracy of one fresh `model` per seed, trained `epochs` epochs on `synthetic` (images
    [n, C, H, W], label_logits [n, classes], lr) under `protocol` with `labels` ("soft" or "hard")
    targets: the run's own check, repeated. Returns one accuracy in [0, 1] per seed."""
    scores = []
    for seed in seeds:
        net = model.build(
            data.channels, data.num_classes, data.resolution, seed=seed, device="cpu", dtype=synthetic["images"].dtype
        )
        scores.append(
            train_and_test(
                net,
                synthetic["images"],
                set_targets(synthetic, labels),
                data.val_images,
                data.val_labels,
                protocol,
                float(synthetic["lr"]),
                seed,
                epochs=epochs,
            )
        )
    return scores


def mean_std(scores: list[float]) -> str:
    """'0.812 ± 0.004 (n=2)' (std over the runs; 0 for one)."""
    std = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return f"{statistics.mean(scores):.3f} ± {std:.3f} (n={len(scores)})"


def load_set(path: Path, ctx, data=None) -> tuple[dict, object, ModelSpec, dict]:
    """A distilled set file with what checking it needs: (synthetic tensors, the data under the set's
    own preprocessing from `ctx` (a `start` context; `data` when given, prepared for a set of the same
    run), the network it was distilled with, its metadata)."""
    synthetic, pre_state, meta = load_artifact(path)
    model = ModelSpec(meta.get("model", ctx.cfg.model.name), dict(meta.get("model_options", {})))
    if data is None:
        stored = meta["dataset_fingerprint"]["preprocess"]
        preprocessor = Preprocessor.from_state(
            stored["kind"], pre_state, stored["zca_eps"], stored.get("statistics", "measured")
        )
        data = ctx.data(preprocessor)
    return synthetic, data, model, meta


def recheck_run(folder: Path, ctx, runs: int, epochs: int | None = None) -> dict:
    """Fresh checks of the run in `folder` under `ctx` (a `start` context: protocol, seed, data): its
    recorded best check ("recorded": score, iteration), the fresh scores of its best set ("best") and
    of its last set ("last"), `runs` seeds each (the same seeds for both sets, none of them the run's),
    its "ipc", the fresh checks' "epochs" (`epochs`; None: the run's own) and the run's own ("run_epochs")."""
    summary = bench_script.run_facts(folder)
    seeds = [derive_seed(ctx.cfg.seed, f"recheck/{folder.name}", r) for r in range(runs)]
    out, data = {"recorded": summary["best"], "skipped": summary["skipped"]}, None
    for key, file in (("best", "distilled.safetensors"), ("last", "distilled_last.safetensors")):
        synthetic, data, model, meta = load_set(folder / file, ctx, data)  # both sets share the run's data
        labels = ctx.cfg.protocol.labels if meta["soft_labels"] else "hard"  # as the run's checks
        run_epochs = meta["distill"]["eval_epochs"]
        out[key] = fresh_checks(synthetic, data, model, ctx.cfg.protocol, epochs or run_epochs, labels, seeds)
    out["ipc"], out["epochs"], out["run_epochs"] = meta["ipc"], epochs or run_epochs, run_epochs
    out["check_trainings"] = meta["distill"].get("eval_runs", 1)
    return out


def write_report(dataset: str, rows: dict[str, dict], args: list[str], seconds: float, out: Path) -> None:
    """The recheck table: per run its recorded best check, fresh checks of that set and of the last one.
    Fresh checks longer or shorter than the run's own are said so, and their difference is no overstatement."""
    lengths = "/".join(str(e) for e in sorted({row["epochs"] for row in rows.values()}))
    own = "/".join(str(e) for e in sorted({row.get("run_epochs", row["epochs"]) for row in rows.values()}))
    same = lengths == own
    lines = [
        f"# {dataset}: the benchmark's selected sets, checked again",
        "",
        f"Command: `.venv/bin/python scripts/recheck_selection.py {' '.join(args)}`".rstrip() + "  ",
        f"Commit: {git_commit()}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}  ",
        f"Wall time: {seconds / 60:.1f} min",
        "",
        "Each run of the benchmark kept the set whose validation check scored best; a check averages "
        f"{'/'.join(str(n) for n in sorted({row.get('check_trainings', 1) for row in rows.values()}))} fresh "
        f"network(s) trained {own} epochs. "
        + (
            "Here each run's best set and its last set are trained again under that check, "
            if same
            else f"Here each run's best set and its last set are trained again under that check but for {lengths} "
            "epochs, "
        )
        + "one network per new seed (the same seeds for both sets), and scored on the validation split. The test "
        "split is not used. "
        + (
            "Recorded minus fresh: how much the best check overstated its set."
            if same
            else "Recorded minus fresh: the run's check against the longer (or shorter) one, not an overstatement."
        ),
        "",
        "| run | IPC | recorded best check (iteration) | best set, fresh checks | recorded minus fresh "
        "| last set, fresh checks |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        best = statistics.mean(row["best"])
        lines.append(
            f"| {name} | {row['ipc']} | {row['recorded']['score']:.3f} ({row['recorded']['iteration']}) | "
            f"{mean_std(row['best'])} | {row['recorded']['score'] - best:+.3f} | {mean_std(row['last'])} |"
        )
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())


def whole_number(flag: str, value: str) -> int:
    """`value` of the command-line `flag` as an int; a DistillError (one line) when it is not one."""
    try:
        return int(value)
    except ValueError:
        raise DistillError(f"{flag} takes a whole number, got {value!r}") from None


def main(argv: list[str]) -> None:
    dataset, runs, only, epochs = "fashion_mnist", 2, None, None
    while argv[:1] and argv[0] in ("--dataset", "--runs", "--only", "--epochs"):
        if len(argv) < 2:
            raise DistillError(f"{argv[0]} needs a value")
        flag, value, argv = argv[0], argv[1], argv[2:]
        if flag == "--dataset":
            dataset = value
        elif flag == "--runs":
            runs = whole_number(flag, value)
        elif flag == "--epochs":
            epochs = whole_number(flag, value)
        else:
            only = set(value.split(","))
    if runs < 1:
        raise DistillError("--runs must be at least 1")
    if epochs is not None and epochs < 1:
        raise DistillError("--epochs must be at least 1")
    os.chdir(ROOT)
    bench = bench_script.Benchmark(dataset, argv, bench_script.training_split_size(dataset, argv))
    ctx = start(bench.config([]), "eval")
    folders = sorted(
        f for f in bench.work.glob("*") if (f / "distilled_last.safetensors").is_file() and "." not in f.name
    )
    folders = [f for f in folders if only is None or f.name in only]
    if not folders:
        raise DistillError(f"no finished runs in {bench.work}: run scripts/reproduce_fashion_mnist.py first")
    started, rows = time.perf_counter(), {}
    for folder in folders:
        rows[folder.name] = recheck_run(folder, ctx, runs, epochs)
        print(folder.name, {k: rows[folder.name][k] for k in ("recorded", "best", "last")}, flush=True)
    args = [*(["--dataset", dataset] if dataset != "fashion_mnist" else []), "--runs", str(runs)]
    args += ["--only", ",".join(sorted(only))] if only else []
    args += ["--epochs", str(epochs)] if epochs else []
    out = ROOT / "results" / f"{dataset}_selection_recheck{f'_epochs{epochs}' if epochs else ''}.md"
    write_report(dataset, rows, [*args, *argv], time.perf_counter() - started, out)
    print(out.read_text())


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
