"""The command-line layer: `key=value` overrides -> composed config -> `Config` objects -> one library call.

Composition uses Hydra's compose API on `configs/` (with the schema of `distill/config.py`), so
commands write nothing of their own (no Hydra output folders) and every problem, from a misspelt
preset to a range error, ends as one line on stderr with exit status 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
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
            cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise DistillError(f"config: {_explain(exc, overrides)}") from None
    unknown = unknown_keys(cfg)
    if unknown:
        raise DistillError(
            f"config: unknown key {unknown[0]} (the config has no such setting){_did_you_mean(unknown[0])}"
        )
    return cfg


TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}


def _explain(exc: BaseException, overrides: list[str]) -> str:
    """One line saying which override failed and why, from Hydra's / OmegaConf's nested exceptions."""
    cause = exc.__cause__ or exc
    key = getattr(cause, "full_key", None)
    text = str(cause)
    if "not in struct" in text or re.match(r"Key '[^']*' not in '", text):
        # the whole key the user typed, not just the node that failed (`distil` of `distil.ipc`)
        keys = [_override_key(o) for o in overrides]
        typed = next((k for k in keys if key and (k == key or k.startswith(key + "."))), None)
        typed = typed or _override_key(_failed_override(str(exc), overrides))
        return f"unknown key {typed}{_did_you_mean(typed)}"
    value = next((o.split("=", 1)[1] for o in overrides if _override_key(o) == key), None)
    for word, phrase in TYPE_WORDS.items():
        if f"converted to {word}" in text and key:
            return f"{key} must be {phrase} (got {value!r})"
    if "not a valid bool" in text and key:
        return f"{key} must be true or false (got {value!r})"
    if "is not a ListConfig" in text and key:
        return f"{key} must be a list, e.g. {key}=[{value}]"
    return f"{key + ': ' if key else ''}{_first_line(cause)}"


def _sections(schema: type) -> dict[str, type | None]:
    """A schema dataclass's fields: name -> the dataclass of a nested section, None for a value."""
    sections = {}
    for f in dataclasses.fields(schema):
        inner = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        sections[f.name] = type(inner) if dataclasses.is_dataclass(inner) else None
    return sections


def config_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config tree (e.g. "dataset.download"), from the dataclass schema."""
    keys = []
    for name, section in _sections(schema).items():
        keys += config_keys(section, f"{prefix}{name}.") if section else [prefix + name]
    return keys


def unknown_keys(node, schema: type = Config, prefix: str = "") -> list[str]:
    """Dotted keys of a composed tree (a DictConfig) that the schema lacks: what a `+key=value` override
    adds, which Hydra accepts even on a typed config. Values that are free dicts (`model.options`) are not
    looked into."""
    sections = _sections(schema)
    unknown = []
    for name in node:
        if name not in sections:
            unknown.append(prefix + str(name))
        elif sections[name] is not None:
            unknown += unknown_keys(node[name], sections[name], f"{prefix}{name}.")
    return unknown


def config_key_suggestions(key: str) -> list[str]:
    """Keys of the config tree a mistyped `key` probably meant, at most 3: the closest spellings
    (`distil.ipc` -> `distill.ipc`), then keys of the same name elsewhere (`download` -> `dataset.download`)."""
    keys = config_keys()
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.75)
    name = key.rsplit(".", 1)[-1]
    same_name = [k for k in keys if k.rsplit(".", 1)[-1] == name and k != key and k not in close]
    return (close + same_name)[:3]


def _did_you_mean(key: str) -> str:
    guesses = config_key_suggestions(key)
    return f"; did you mean {' or '.join(guesses)}?" if guesses else ""


def _override_key(override: str) -> str:
    """The key of a `key=value` override, without Hydra's `+` / `~` prefix."""
    return override.split("=")[0].lstrip("+~")


def _failed_override(message: str, overrides: list[str]) -> str:
    return next((o for o in overrides if _override_key(o) in message), message)


def load_config(overrides: list[str] = ()) -> Config:
    """`Config` objects for command-line style `overrides` (e.g. ["experiment=digits_demo", "distill.ipc=1"])."""
    return to_config(compose_config(list(overrides)))


USAGE = """usage: {name} [--show] [key=value ...]

Overrides of the config tree in configs/ (schema: distill/config.py), e.g.
  {name} experiment=digits_demo distill.ipc=1 device=cpu
--show prints the config these overrides give (every key, checked) and runs nothing.
Presets (experiment=...): {experiments}
Sections: {sections}
"""


def show_config(cfg: Config) -> str:
    """`cfg` as the YAML of its whole tree, every default filled in (what `--show` prints)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def check_arguments(argv: list[str]) -> list[str]:
    """The overrides in a command line, `--show` left out; DistillError (one line) for anything that is
    neither a `key=value` override nor a known flag."""
    for arg in argv:
        if arg == "--show":
            continue
        if arg.startswith("-") or "=" not in arg.lstrip("~"):
            guesses = [] if arg.startswith("-") else config_key_suggestions(arg)
            hint = f", e.g. {guesses[0]}=VALUE" if guesses else " (see --help)"
            raise DistillError(f"arguments are key=value overrides or --show, not '{arg}'{hint}")
    return [a for a in argv if a != "--show"]


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
            sections = sorted({key.split(".")[0] for key in config_keys() if "." in key})
            print(
                USAGE.format(
                    name=name, experiments=", ".join(group_options("experiment")), sections=", ".join(sections)
                )
            )
            return
        try:
            cfg = load_config(check_arguments(argv))
            if "--show" in argv:
                print(show_config(cfg), end="")
                return
            job(cfg)
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
