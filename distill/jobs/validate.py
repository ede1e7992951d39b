"""Config validation before any work starts: every problem names its key."""

from __future__ import annotations

from omegaconf import DictConfig

from distill.data.preprocess import REFERENCE_STATISTICS
from distill.errors import DistillError

PIX_INITS = ("real", "correct", "noise")
ENGINES = ("compiled", "flat", "plain")
SELECTIONS = ("validation", "test")
LABEL_MODES = ("soft", "hard")
NORMALISATIONS = ("measured", "reference")


def _require(condition: bool, key: str, message: str, value=None) -> None:
    if not condition:
        raise DistillError(f"config: {key} {message} (got {value!r})")


def _integer(cfg: DictConfig, key: str, minimum: int | None = None, nullable: bool = False) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if value is None and nullable:
        return
    _require(isinstance(value, int) and not isinstance(value, bool), key, "must be an integer", value)
    if minimum is not None:
        _require(value >= minimum, key, f"must be >= {minimum}", value)


def _positive(cfg: DictConfig, key: str, nullable: bool = False) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if value is None and nullable:
        return
    _require(isinstance(value, (int, float)) and not isinstance(value, bool), key, "must be a number", value)
    _require(value > 0, key, "must be > 0", value)


def _choice(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    _require(value in choices, key, f"must be one of {', '.join(choices)}", value)


def required_epochs(max_start_epoch: int, expert_epochs: int) -> int:
    """Expert epochs the window needs: start epochs go up to T+ - 1 and targets M epochs further."""
    return max_start_epoch - 1 + expert_epochs


def validate_config(cfg: DictConfig, job: str) -> None:
    """Check the sections `job` ('buffers', 'distill', 'eval', 'pipeline') reads; raise on the first problem."""
    _integer(cfg, "seed", 0)
    _choice(cfg, "dtype", ("float32", "float64"))
    _integer(cfg, "dataset.val_per_class", 0)
    _positive(cfg, "dataset.zca_eps")
    _choice(cfg, "dataset.normalisation", NORMALISATIONS)
    if cfg.dataset.normalisation == "reference":
        _require(cfg.dataset.name in REFERENCE_STATISTICS, "dataset.normalisation",
                 f"=reference has constants only for {', '.join(REFERENCE_STATISTICS)}", cfg.dataset.name)
        _require(not cfg.dataset.zca, "dataset.normalisation", "=reference needs dataset.zca=false", cfg.dataset.zca)
    if job in ("buffers", "pipeline"):
        _integer(cfg, "buffers.num_experts", 1)
        _integer(cfg, "buffers.epochs", 1)
        _integer(cfg, "buffers.batch_size", 1)
        _positive(cfg, "buffers.lr")
        need = required_epochs(cfg.distill.max_start_epoch, cfg.distill.expert_epochs)
        if not cfg.buffers.import_from:
            _require(cfg.buffers.epochs >= need, "buffers.epochs",
                     f"must be >= distill.max_start_epoch - 1 + distill.expert_epochs = {need}", cfg.buffers.epochs)
    if job in ("distill", "pipeline"):
        d = "distill"
        _integer(cfg, f"{d}.ipc", 1)
        _integer(cfg, f"{d}.iterations", 0)
        _integer(cfg, f"{d}.syn_steps", 1)
        _integer(cfg, f"{d}.expert_epochs", 1)
        _integer(cfg, f"{d}.min_start_epoch", 0)
        _integer(cfg, f"{d}.current_max_start_epoch", 1)
        _integer(cfg, f"{d}.max_start_epoch", 1)
        _integer(cfg, f"{d}.expansion_end_iteration", 1)
        _integer(cfg, f"{d}.batch_syn", 1, nullable=True)
        _integer(cfg, f"{d}.eval_every", 0)
        _integer(cfg, f"{d}.eval_runs", 1)
        _integer(cfg, f"{d}.eval_epochs", 1)
        _integer(cfg, f"{d}.checkpoint_every", 1)
        _integer(cfg, f"{d}.max_consecutive_skips", 1)
        _integer(cfg, f"{d}.label_init_experts", 1, nullable=True)
        for key in ("lr_img", "lr_lr", "lr_y", "lr_teacher", "min_syn_lr", "threshold"):
            _positive(cfg, f"{d}.{key}")
        for key in ("momentum_img", "momentum_lr", "momentum_y"):
            value = cfg[d][key]
            _require(isinstance(value, (int, float)) and 0 <= value < 1, f"{d}.{key}", "must be in [0, 1)", value)
        c = cfg[d]
        _require(c.min_start_epoch < c.max_start_epoch, f"{d}.min_start_epoch",
                 f"must be < distill.max_start_epoch = {c.max_start_epoch}", c.min_start_epoch)
        if c.sequential_generation:
            _require(c.min_start_epoch < c.current_max_start_epoch <= c.max_start_epoch, f"{d}.current_max_start_epoch",
                     f"must lie in (min_start_epoch, max_start_epoch] = ({c.min_start_epoch}, {c.max_start_epoch}]",
                     c.current_max_start_epoch)
        _choice(cfg, f"{d}.pix_init", PIX_INITS)
        _choice(cfg, f"{d}.engine", ENGINES)
        _choice(cfg, f"{d}.selection", SELECTIONS)
    if job in ("eval", "pipeline"):
        _integer(cfg, "eval.runs", 1)
        _integer(cfg, "eval.full_epochs", 1)
        _require(len(cfg.eval.architectures) > 0, "eval.architectures", "must name at least one model",
                 list(cfg.eval.architectures))
        _integer(cfg, "protocol.epochs", 1)
        _integer(cfg, "protocol.batch_size", 1)
        _positive(cfg, "protocol.lr", nullable=True)
        _positive(cfg, "protocol.baseline_lr")
        _choice(cfg, "protocol.labels", LABEL_MODES)
        for mode in cfg.eval.label_modes:
            _require(mode in LABEL_MODES, "eval.label_modes", f"may hold only {', '.join(LABEL_MODES)}", mode)
        for baseline in cfg.eval.baselines:
            _require(baseline in ("random", "full"), "eval.baselines", "may hold only random and full", baseline)
