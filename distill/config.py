"""The configuration schema of the commands: the settings dataclasses of the library, gathered per section.

Each field's name, type, default and range is defined once, in the library's own dataclass
(`DatasetSpec`, `ModelSpec`, `ExpertRecipe`, `DistillSettings`, `Protocol`) or, for what only the
commands need (folders, evaluation plan, logging), here. Hydra composes `configs/` on top of this
schema (registered as the structured config `schema`), so a misspelt key or a value of the wrong
type is refused while composing; `to_config` turns the composed tree into these objects once, at the
entry point, and their range checks run there. Below the entry point only the objects flow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from distill import checks
from distill.buffers.recipe import ExpertRecipe, GsamSettings
from distill.data.prepare import DatasetSpec
from distill.data.registry import NAMED_BY_ROOT
from distill.errors import DistillError, SettingError
from distill.evaluate.protocol import Protocol
from distill.matching.run import BOOKKEEPING
from distill.matching.settings import DistillSettings
from distill.models.registry import ModelSpec


@dataclass
class BuffersConfig(ExpertRecipe):
    """The expert recipe, how many experts, or a folder of official replay buffers to import instead."""

    num_experts: int = 5
    parallel: int = 1  # experts trained at once in one vmapped pass (same trajectories; for GPUs: slower on CPU)
    import_from: str | None = None  # folder of official replay_buffer_*.pt files

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.integer(self, "num_experts", 1)
        checks.integer(self, "parallel", 1)

    def recipe(self) -> ExpertRecipe:
        """The training recipe alone."""
        names = [f.name for f in dataclasses.fields(ExpertRecipe)]
        return ExpertRecipe(**{name: getattr(self, name) for name in names})


@dataclass
class PathsConfig:
    """Where the commands read and write. None = a folder named after what makes its contents differ
    (`Config.buffers_folder()`, `Config.distill_folder()`), so runs of other settings never share one."""

    buffers: str | None = None
    distill: str | None = None
    results: str = "runs/results"  # records, tables, plots of a user's runs (results/ holds the committed ones)


@dataclass
class LoggerConfig:
    """Weights & Biases logging (rank 0 only); mode offline writes runs under ./wandb to sync later."""

    enabled: bool = False
    project: str = "distill"
    mode: str = "offline"
    entity: str | None = None


@dataclass
class EvalConfig:
    """What `distill-eval` trains: the artifact (if any), the baselines, architectures and repeats."""

    artifact: str | None = None  # a distilled.safetensors or its run folder; None = baselines only
    baselines: list[str] = field(default_factory=lambda: ["random", "full"])
    label_modes: list[str] = field(default_factory=lambda: ["soft", "hard"])
    # a model name (the config's `model` with its options when it is model.name, else that model's defaults)
    # or {name: ..., option: value, ...}, e.g. [convnet, {name: convnet, width: 128}]: one more network
    architectures: list[Any] = field(default_factory=lambda: ["convnet"])
    runs: int = 5
    parallel: int = 1  # repeats of one set trained at once in one vmapped pass (same results; for GPUs: slower on CPU)
    ipc: int | None = None  # IPC of the random baseline; None = distill.ipc (an artifact's own IPC wins)
    full_epochs: int = 30  # the full-set baseline trains this many epochs
    table: str | None = None  # None = <paths.results>/<dataset>.md

    def __post_init__(self) -> None:
        checks.integer(self, "runs", 1)
        checks.integer(self, "parallel", 1)
        checks.integer(self, "full_epochs", 1)
        checks.integer(self, "ipc", 1, nullable=True)
        if not self.architectures:
            checks.fail(self, "architectures", "must name at least one model")
        for entry in self.architectures:
            if not (isinstance(entry, str) or (isinstance(entry, dict) and isinstance(entry.get("name"), str))):
                checks.fail(self, "architectures", "takes model names or {name: ..., option: value} mappings")
        for name, allowed in (("label_modes", ("soft", "hard")), ("baselines", ("random", "full"))):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad:
                checks.fail(self, name, f"may hold only {', '.join(allowed)}")


@dataclass
class PipelineConfig:
    ipcs: list[int] = field(default_factory=lambda: [1, 10])
    per_ipc: dict[str, Any] = field(default_factory=dict)  # e.g. {ipc1: {syn_steps: 30}}: distill overrides


@dataclass
class Config:
    """The whole configuration of every command (each reads the sections it needs)."""

    seed: int = 0  # base seed: experts, distillation and evaluation runs derive theirs from it
    device: str = "auto"  # auto = this rank's GPU when CUDA exists, else the CPU
    dtype: str = "float32"
    progress: bool = True  # tqdm progress bars
    # experts, evaluation networks and validation checks trained through torch.compile: the same training to
    # float round-off, ~2x faster at batch 256 on a CPU, after ~10-25 s of compiling per batch shape
    compile_training: bool = False
    # bfloat16 autocast for every network's convolutions and matrix products (experts, the student's steps,
    # evaluation networks, validation checks): ~2x faster where the hardware has bfloat16 arithmetic, NOT
    # exact (a student step's gradient within a few % of float32's); needs dtype float32 and parallel 1
    mixed_precision: bool = False
    paths: PathsConfig = field(default_factory=PathsConfig)
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    protocol: Protocol = field(default_factory=Protocol)
    buffers: BuffersConfig = field(default_factory=BuffersConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def __post_init__(self) -> None:
        checks.integer(self, "seed", 0)
        checks.choice(self, "dtype", ("float32", "float64"))
        if not isinstance(self.mixed_precision, bool):
            checks.fail(self, "mixed_precision", "must be true or false")
        if self.mixed_precision and self.dtype != "float32":
            checks.fail(self, "mixed_precision", "mixes bfloat16 into float32 work: set dtype=float32 with it")

    def check_for(self, job: str) -> None:
        """Rules across sections, for the job about to run ('buffers', 'distill', 'eval', 'pipeline')."""
        if job in ("buffers", "pipeline") and not self.buffers.import_from:
            need = self.distill.required_epochs
            if self.buffers.epochs < need:
                raise DistillError(
                    f"config: buffers.epochs must be >= distill.max_start_epoch - 1 + "
                    f"distill.expert_epochs = {need} (got {self.buffers.epochs})"
                )
        if (
            job in ("distill", "pipeline")
            and self.distill.selection == "validation"
            and self.dataset.val_per_class == 0
        ):
            raise DistillError(
                "config: distill.selection=validation needs dataset.val_per_class > 0 (or distill.selection=test)"
            )

    def _digest(self, *parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]

    def _data_identity(self) -> dict:
        identity = {k: v for k, v in dataclasses.asdict(self.dataset).items() if k not in ("root", "download")}
        if self.dataset.name in NAMED_BY_ROOT:
            identity["root"] = str(Path(self.dataset.root or Path("data") / self.dataset.name).expanduser().resolve())
        return identity

    def buffers_folder(self) -> Path:
        """paths.buffers, or buffers/<dataset>/<model>_<hash of data, model options, recipe and seed>."""
        if self.paths.buffers:
            return Path(self.paths.buffers)
        recipe = dataclasses.asdict(self.buffers.recipe())
        digest = self._digest(
            self._data_identity(), dataclasses.asdict(self.model), recipe, self.seed, self.buffers.import_from
        )
        return Path("buffers") / self.dataset.name / f"{self.model.name}_{digest}"

    def distill_folder(self) -> Path:
        """paths.distill, or runs/distill/<dataset>/<method>_ipc<IPC>_<model>_<hash of everything that shapes
        the run>: a longer or more often evaluated run of the same settings resumes in the same folder."""
        if self.paths.distill:
            return Path(self.paths.distill)
        shaping = {k: v for k, v in dataclasses.asdict(self.distill).items() if k not in BOOKKEEPING}
        digest = self._digest(
            self._data_identity(),
            dataclasses.asdict(self.model),
            dataclasses.asdict(self.buffers.recipe()),
            self.seed,
            self.dtype,
            shaping,
        )
        return (
            Path("runs") / "distill" / self.dataset.name / f"{self.distill.method}_ipc{self.distill.ipc}_"
            f"{self.model.name}_{digest}"
        )

    def table_path(self) -> Path:
        """eval.table, or <paths.results>/<dataset>.md."""
        return Path(self.eval.table) if self.eval.table else Path(self.paths.results) / f"{self.dataset.name}.md"

    def with_distill(self, **changes: Any) -> Config:
        """A copy with `distill` fields replaced (and checked again)."""
        return dataclasses.replace(self, distill=dataclasses.replace(self.distill, **changes))

    def to_dict(self) -> dict:
        """Plain nested dicts and lists (for metadata, hashing and logging)."""
        return dataclasses.asdict(self)


SECTIONS = {
    DatasetSpec: "dataset",
    ModelSpec: "model",
    BuffersConfig: "buffers",
    GsamSettings: "buffers.gsam",
    DistillSettings: "distill",
    Protocol: "protocol",
    EvalConfig: "eval",
    PathsConfig: "paths",
    LoggerConfig: "logger",
    PipelineConfig: "pipeline",
}


def as_config_error(exc: SettingError) -> DistillError:
    """A settings error re-worded with its config key (`DistillSettings.ipc` -> `distill.ipc`)."""
    section = next((name for cls, name in SECTIONS.items() if cls.__name__ == exc.owner), None)
    key = f"{section}.{exc.field}" if section else exc.field
    return DistillError(f"config: {key} {exc.problem} (got {exc.value!r})")


def to_config(cfg: DictConfig | Config) -> Config:
    """The composed config tree as `Config` objects (interpolations resolved, every range checked)."""
    try:
        node = (
            OmegaConf.structured(cfg) if isinstance(cfg, Config) else OmegaConf.merge(OmegaConf.structured(Config), cfg)
        )
        return OmegaConf.to_object(node)
    except SettingError as exc:
        raise as_config_error(exc) from None
    except DistillError:
        raise
    except Exception as exc:  # an OmegaConf type or key error: one line naming the key
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        key = getattr(exc, "full_key", None)
        raise DistillError(f"config: {key + ': ' if key else ''}{message}") from None


def register_schema() -> None:
    """Register `Config` as Hydra's structured config `schema` (configs/config.yaml builds on it)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="schema", node=Config)
