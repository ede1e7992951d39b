"""distill-pipeline: the main job end to end: experts, distillation at each IPC, evaluation, results table."""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from distill.io.atomic import atomic_write_bytes, atomic_write_json
from distill.jobs.buffers import run_buffers
from distill.jobs.common import CONFIG_DIR, friendly_errors
from distill.jobs.distill import run_distill
from distill.jobs.evaluate import run_evaluate
from distill.jobs.validate import validate_config


def config_for_ipc(cfg: DictConfig, ipc: int) -> DictConfig:
    """A copy of `cfg` with distill.ipc = ipc and the `pipeline.per_ipc.ipc<ipc>` overrides applied."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(out):
        out.distill.ipc = ipc
        overrides = (cfg.get("pipeline", {}) or {}).get("per_ipc", {}) or {}
        for key, value in (overrides.get(f"ipc{ipc}", {}) or {}).items():
            out.distill[key] = value
    return out


def run_pipeline(cfg: DictConfig) -> list[dict]:
    """Buffers once, then for every IPC in `cfg.pipeline.ipcs`: distil and evaluate. Returns all records."""
    ipcs = list(cfg.pipeline.ipcs)
    for ipc in ipcs:
        validate_config(config_for_ipc(cfg, ipc), "pipeline")
    timings, records = {}, []
    started = time.perf_counter()
    run_buffers(cfg)
    timings["buffers"] = time.perf_counter() - started
    for i, ipc in enumerate(ipcs):
        sub = config_for_ipc(cfg, ipc)
        t0 = time.perf_counter()
        out = run_distill(sub)
        timings[f"distill_ipc{ipc}"] = time.perf_counter() - t0
        grid = Path(cfg.paths.results) / f"{cfg.dataset.name}_{sub.distill.method}_ipc{ipc}_grid.png"
        atomic_write_bytes(grid, (out / "grid.png").read_bytes())
        with open_dict(sub):
            sub.eval.artifact = str(out / "distilled.safetensors")
            # the full-dataset baseline does not depend on IPC: train it once
            sub.eval.baselines = [b for b in sub.eval.baselines if b != "full" or i == 0]
        t0 = time.perf_counter()
        records += run_evaluate(sub)
        timings[f"evaluate_ipc{ipc}"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    summary = Path(cfg.paths.results) / f"{cfg.dataset.name}_pipeline_timings.json"
    atomic_write_json(summary, {k: round(v, 1) for k, v in timings.items()})
    print(Path(cfg.eval.table).read_text())
    print("stage timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return records


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@friendly_errors
def main(cfg: DictConfig) -> None:
    run_pipeline(cfg)


if __name__ == "__main__":
    main()
