"""The command-line layer: `key=value` overrides -> composed config -> `Config` objects -> one library call.

Composition uses Hydra's compose API on `configs/` (with the schema of `distill/config.py`), so
commands write nothing of their own (no Hydra output folders) and every problem, from a misspelt
preset to a range error, ends as one line on stderr with exit status 2.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.config import Config, register_schema, to_config
from distill.errors import DistillError

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def group_options(group: str) -> list[str]:
    """The choices of a config group (e.g. the experiment presets), sorted."""
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _other_rank_failed(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because a peer rank went away (under torchrun only)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return False
    text = str(exc).lower()
    return any(
        word in text for word in ("connection closed", "connection reset", "broken pipe", "timed out", "nccl", "gloo")
    )


def compose_config(overrides: list[str]):
    """The composed config tree (a DictConfig) for `overrides`; DistillError (one line) on any problem."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in [p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()] and value not in ("", "null"):
            if value not in group_options(key):
                raise DistillError(f"no {key} '{value}': choose one of {', '.join(group_options(key))}")
    register_schema()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise DistillError(f"config: {_explain(exc, overrides)}") from None


TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}


def _explain(exc: BaseException, overrides: list[str]) -> str:
    """One line saying which override failed and why, from Hydra's / OmegaConf's nested exceptions."""
    cause = exc.__cause__ or exc
    key = getattr(cause, "full_key", None)
    text = str(cause)
    if "not in struct" in text:
        return f"unknown key in '{_failed_override(str(exc), overrides)}': {_first_line(cause)}"
    value = next((o.split("=", 1)[1] for o in overrides if o.split("=")[0].lstrip("+~") == key), None)
    for word, phrase in TYPE_WORDS.items():
        if f"converted to {word}" in text and key:
            return f"{key} must be {phrase} (got {value!r})"
    if "not a valid bool" in text and key:
        return f"{key} must be true or false (got {value!r})"
    if "is not a ListConfig" in text and key:
        return f"{key} must be a list, e.g. {key}=[{value}]"
    return f"{key + ': ' if key else ''}{_first_line(cause)}"


def _failed_override(message: str, overrides: list[str]) -> str:
    return next((o for o in overrides if o.split("=")[0].lstrip("+~") in message), message)


def load_config(overrides: list[str] = ()) -> Config:
    """`Config` objects for command-line style `overrides` (e.g. ["experiment=digits_demo", "distill.ipc=1"])."""
    return to_config(compose_config(list(overrides)))


USAGE = """usage: {name} [key=value ...]

Overrides of the config tree in configs/ (schema: distill/config.py), e.g.
  {name} experiment=digits_demo distill.ipc=1 device=cpu
Presets (experiment=...): {experiments}
"""


def command(job: Callable[[Config], Any], name: str) -> Callable[[list[str] | None], None]:
    """A console-script entry point running `job(config)` on the composed command line.

    DistillError (and config problems) -> one line on stderr, exit status 2; Ctrl-C -> exit 130.
    Under torchrun the process group is left together (barrier, then destroy), also on errors.
    """

    @functools.wraps(job)
    def main(argv: list[str] | None = None) -> None:
        from distill.parallel import abandon, shutdown

        argv = sys.argv[1:] if argv is None else list(argv)
        if any(a in ("-h", "--help") for a in argv):
            print(USAGE.format(name=name, experiments=", ".join(group_options("experiment"))))
            return
        try:
            job(load_config(argv))
            shutdown()
        except DistillError as exc:
            print(f"error: {exc}", file=sys.stderr)
            abandon()
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: re-run the same command to resume from the last checkpoint", file=sys.stderr)
            abandon()
            sys.exit(130)
        except RuntimeError as exc:
            if not _other_rank_failed(exc):
                raise
            # a peer died mid-collective: say so in one line, keep whatever was written (checkpoints are atomic)
            print(
                f"error: another torchrun rank stopped ({_first_line(exc)[:160]}): the last checkpoint is "
                "intact; re-run the same command to resume",
                file=sys.stderr,
            )
            abandon()
            sys.exit(3)

    return main
