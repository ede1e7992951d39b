"""distill-pipeline: the main job end to end: experts, distillation at each IPC, evaluation, results table."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from distill.config import Config, to_config
from distill.io.atomic import atomic_write_bytes, atomic_write_json
from distill.stages.buffers import run_buffers
from distill.stages.distill import run_distill
from distill.stages.evaluate import run_evaluate


def config_for_ipc(cfg: Config, ipc: int) -> Config:
    """`cfg` with distill.ipc = ipc and the `pipeline.per_ipc.ipc<ipc>` overrides applied (checked again)."""
    return cfg.with_distill(ipc=ipc, **dict(cfg.pipeline.per_ipc.get(f"ipc{ipc}", {}) or {}))


def run_pipeline(cfg: Config) -> list[dict]:
    """Buffers once, then for every IPC in `cfg.pipeline.ipcs`: distil and evaluate. Returns all records."""
    cfg = to_config(cfg)
    subs = [config_for_ipc(cfg, ipc) for ipc in cfg.pipeline.ipcs]
    for sub in subs:
        sub.check_for("pipeline")
    timings, records = {}, []
    started = time.perf_counter()
    run_buffers(cfg)
    timings["buffers"] = time.perf_counter() - started
    results = Path(cfg.paths.results)
    for i, sub in enumerate(subs):
        ipc = sub.distill.ipc
        t0 = time.perf_counter()
        out = run_distill(sub)
        timings[f"distill_ipc{ipc}"] = time.perf_counter() - t0
        grid = results / f"{cfg.dataset.name}_{sub.distill.method}_ipc{ipc}_grid.png"
        atomic_write_bytes(grid, (out / "grid.png").read_bytes())
        # the full-dataset baseline does not depend on IPC: train it once
        evaluation = dataclasses.replace(
            sub.eval,
            artifact=str(out / "distilled.safetensors"),
            baselines=[b for b in sub.eval.baselines if b != "full" or i == 0],
        )
        t0 = time.perf_counter()
        records += run_evaluate(dataclasses.replace(sub, eval=evaluation))
        timings[f"evaluate_ipc{ipc}"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    atomic_write_json(
        results / f"{cfg.dataset.name}_pipeline_timings.json", {k: round(v, 1) for k, v in timings.items()}
    )
    print(cfg.table_path().read_text())
    print(f"grids: {results}/{cfg.dataset.name}_*_grid.png")
    print("stage timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return records
