import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.stages.distill import run_distill
from tests.conftest import TINY, make_config

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert readme.startswith("```bash") and commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set", "cd"))
    ]
    assert ci == ["bash scripts/test.sh"]


@pytest.mark.parametrize(
    "override,key",
    [
        ("distill.ipc=0", "distill.ipc must be >= 1"),
        ("distill.ipc=abc", "distill.ipc must be an integer"),
        ("distill.syn_steps=2.5", "distill.syn_steps must be an integer"),
        ("distill.lr_img=-1", "distill.lr_img must be a number > 0"),
        ("distill.current_max_start_epoch=9", "distill.current_max_start_epoch must lie in"),
        ("distill.pix_init=zeros", "distill.pix_init must be one of"),
        ("dtype=float16", "dtype must be one of"),
    ],
)
def test_invalid_config_is_rejected_naming_the_key(tmp_path, override, key):
    with pytest.raises(DistillError, match=re.escape(key)):
        run_distill(make_config(tmp_path, override))


def test_cli_error_is_one_line_and_exit_code_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "distill.jobs.distill", *TINY, "distill.ipc=0", f"paths.distill={tmp_path}/d"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: config: distill.ipc must be >= 1 (got 0)"]
    assert not (tmp_path / "d").exists()


def test_unknown_config_keys_are_rejected(tmp_path):

    with pytest.raises(Exception, match="distill.not_a_key|not_a_key"):
        make_config(tmp_path, "distill.not_a_key=3")


def test_the_main_job_writes_only_ignored_paths_and_says_where(tmp_path):
    # run in an empty folder: every file the pipeline writes under its default paths must be one the
    # repository ignores, so a user's clone stays clean
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.jobs.pipeline",
            "experiment=digits_demo",
            *TINY,
            "pipeline.ipcs=[1]",
            "eval.runs=1",
            "protocol.epochs=5",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| IPC |" in result.stdout and "grids: runs/results/digits_*_grid.png" in result.stdout
    written = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()]
    assert any(w.startswith("runs/results/") for w in written) and any(w.startswith("buffers/") for w in written)
    check = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "--no-index", "--verbose", "--non-matching", *written],
        capture_output=True,
        text=True,
    )
    not_ignored = [line.split("\t")[-1] for line in check.stdout.splitlines() if line.startswith("::")]
    assert not_ignored == []


def test_a_misspelt_preset_stops_at_once_listing_the_valid_ones(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "distill.jobs.distill", "experiment=nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no experiment 'nope': choose one of ")
    assert "digits_demo" in lines[0] and "datm_cifar10_ipc10" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_override_key_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "distill.jobs.distill", "distill.lr_imgg=3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "distill.lr_imgg" in lines[0] and lines[0].startswith("error: config:")


@pytest.mark.parametrize(
    "override,message",
    [
        ("eval.architectures=convnet", "config: eval.architectures must be a list, e.g. eval.architectures=[convnet]"),
        ("eval.architectures=[{width:128}]", "config: eval.architectures takes model names or {name: ..., option: "),
        ("dataset.zca=maybe", "config: dataset.zca must be true or false (got 'maybe')"),
        ("model=resnet99", "no model 'resnet99': choose one of alexnet, convnet"),
    ],
)
def test_wrong_value_types_and_choices_are_one_line(override, message):
    from distill.cli import load_config

    with pytest.raises(DistillError) as refused:
        load_config([override])
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "override,message",
    [
        # the fix the data errors name is `dataset.download=true`; the bare name points there
        ("download=true", "config: unknown key download; did you mean dataset.download?"),
        ("distil.ipc=3", "config: unknown key distil.ipc; did you mean distill.ipc"),
        ("eval.rnus=3", "config: unknown key eval.rnus; did you mean eval.runs?"),
        # `+` makes Hydra add a key even to the typed config: a typo there used to be ignored in silence
        (
            "+distill.lr_imgg=5",
            "config: unknown key distill.lr_imgg (the config has no such setting); did you mean distill.lr_img",
        ),
        ("+foo=1", "config: unknown key foo (the config has no such setting)"),
    ],
)
def test_an_unknown_key_is_refused_with_the_keys_it_may_have_meant(override, message):
    from distill.cli import load_config

    with pytest.raises(DistillError) as refused:
        load_config([override])
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_the_schema_lists_every_key_and_a_composed_preset_has_none_beyond_it():
    from distill.cli import compose_config, config_keys, unknown_keys

    keys = config_keys()
    assert {"seed", "dataset.download", "distill.ipc", "buffers.num_experts", "eval.runs"} <= set(keys)
    assert "dataset" not in keys and len(keys) == len(set(keys))
    # free-form options (model.options) are the model's own: not checked against the schema
    assert unknown_keys(compose_config(["experiment=datm_cifar10_ipc10", "+model.options.dropout=0.1"])) == []


def test_show_prints_the_checked_config_and_runs_nothing(tmp_path, capsys):
    import yaml

    from distill.jobs.distill import main

    main(["--show", "experiment=datm_cifar10_ipc10", "distill.ipc=3"])
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["dataset"]["name"] == "cifar10" and shown["distill"]["ipc"] == 3
    assert shown["model"]["options"]["width"] == 128 and "lr_img" in shown["distill"]
    with pytest.raises(SystemExit) as stopped:
        main(["--show", "distill.ipc=0"])
    assert stopped.value.code == 2 and "distill.ipc must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argument,message",
    [
        ("--foo", "error: arguments are key=value overrides or --show, not '--foo' (see --help)"),
        ("ipc", "error: arguments are key=value overrides or --show, not 'ipc', e.g. distill.ipc=VALUE"),
    ],
)
def test_an_argument_that_is_no_override_is_one_line(argument, message, capsys):
    from distill.jobs.distill import main

    with pytest.raises(SystemExit) as stopped:
        main([argument])
    assert stopped.value.code == 2 and capsys.readouterr().err.strip() == message
