"""Evaluation records: one JSON file per (training set, architecture), with everything needed to trust it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from distill.io.atomic import atomic_write_json

RECORD_FORMAT = "distill.eval-record/1"


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit of the project, or None outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=cwd or Path(__file__).resolve().parents[2],
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> str:
    """The machine in words: architecture, CPU cores and the GPU when one is visible."""
    gpu = (
        f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    )
    return f"{platform.machine()}, {os.cpu_count()} CPU cores{gpu}"


def versions() -> dict:
    import distill

    return {"python": platform.python_version(), "torch": torch.__version__, "distill": distill.__version__}


def make_record(
    *,
    dataset: str,
    set_kind: str,
    method: str,
    ipc: int | None,
    labels: str,
    architecture: str,
    protocol: dict,
    lr: float,
    seeds: list[int],
    accuracies: list[float],
    seconds: float,
    artifact_sha256: str | None = None,
    extra: dict | None = None,
) -> dict:
    """A record dict: set_kind is 'distilled', 'random' or 'full'; accuracies are per run in [0, 1]."""
    mean = statistics.fmean(accuracies)
    std = statistics.pstdev(accuracies) if len(accuracies) > 1 else 0.0
    return {
        "format": RECORD_FORMAT,
        "dataset": dataset,
        "set": set_kind,
        "method": method,
        "ipc": ipc,
        "labels": labels,
        "architecture": architecture,
        "protocol": protocol,
        "lr": lr,
        "seeds": seeds,
        "accuracies": accuracies,
        "mean": mean,
        "std": std,
        "runs": len(accuracies),
        "wall_seconds": round(seconds, 2),
        "artifact_sha256": artifact_sha256,
        "versions": versions(),
        "git_commit": git_commit(),
        "machine": machine(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }


def record_path(folder: Path, record: dict) -> Path:
    """A stable file name: the same set, architecture, inputs and protocol overwrite their earlier record.
    (Whitened inputs add themselves to the key, so standardised records keep the names they always had.)"""
    whitened = [inputs_label(record)] if inputs_label(record) != "standardised" else []
    key = json.dumps(
        [
            record["dataset"],
            record["set"],
            record["method"],
            record["ipc"],
            record["labels"],
            record["architecture"],
            record.get("model_options") or {},
            record["protocol"],
            record.get("artifact_sha256"),
            *whitened,
        ],
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return (
        Path(folder) / f"{record['dataset']}_{record['set']}_{record['method']}_ipc{record['ipc']}_"
        f"{record['architecture']}_{record['labels']}_{digest}.json"
    )


def write_record(folder: Path, record: dict) -> Path:
    return atomic_write_json(record_path(folder, record), record)


def cell_key(record: dict) -> tuple:
    """What a table cell shows: the same set kind, method, IPC, labels, architecture and selection rule
    (a set picked on the test split never replaces one picked on the validation split, nor the reverse).
    A baseline's inputs too: the random subset and the full set on whitened inputs sit beside the ones on
    standardised inputs, each the baseline of the distilled sets made on its inputs. A distilled set's
    inputs do not: a method's set made again on other inputs replaces the earlier one. Mixed precision
    neither way: a network trained in bf16 sits beside its float32 twin, never in its place."""
    return (
        record["set"],
        record["method"],
        record["ipc"],
        record["labels"],
        architecture_label(record),
        record.get("selection"),
        None if record["set"] == "distilled" else inputs_label(record),
        mixed_precision(record),
    )


def mixed_precision(record: dict) -> bool:
    """Whether a record's networks trained under bfloat16 autocast (`mixed_precision`; its protocol says so)."""
    return bool((record.get("protocol") or {}).get("mixed_precision", False))


def inputs_label(record: dict) -> str:
    """How a record's images reached the network: "ZCA" (whitened) or "standardised" (also a record from
    before the preprocessing was recorded: standardised was the only kind then)."""
    return "ZCA" if (record.get("preprocess") or {}).get("kind") == "zca" else "standardised"


def architecture_label(record: dict) -> str:
    """The architecture with the options that size it, e.g. 'convnet (width 16, depth 3)'."""
    options = record.get("model_options") or {}
    sized = [f"{k} {options[k]}" for k in ("width", "depth") if k in options]
    return f"{record['architecture']} ({', '.join(sized)})" if sized else record["architecture"]


def newest_per_cell(records: list[dict]) -> list[dict]:
    """One record per table cell: the one finished last (records without `finished_at` count as oldest),
    so a re-distilled set replaces the earlier set's numbers instead of racing them by file name."""
    newest: dict[tuple, dict] = {}
    for record in records:
        key = cell_key(record)
        if key not in newest or record.get("finished_at", "") >= newest[key].get("finished_at", ""):
            newest[key] = record
    return list(newest.values())


def read_records(folder: Path, dataset: str | None = None) -> list[dict]:
    """Every record in `folder` (optionally of one dataset); unreadable files are skipped."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if record.get("format") == RECORD_FORMAT and (dataset is None or record.get("dataset") == dataset):
            records.append(record)
    return records
