import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.jobs.distill import run_distill
from tests.conftest import TINY, make_config

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert readme.startswith("```bash") and commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith(("#", "set", "cd"))]
    assert ci == ["bash scripts/test.sh"]


@pytest.mark.parametrize("override,key", [
    ("distill.ipc=0", "distill.ipc must be >= 1"),
    ("distill.ipc=abc", "distill.ipc must be an integer"),
    ("distill.syn_steps=2.5", "distill.syn_steps must be an integer"),
    ("distill.lr_img=-1", "distill.lr_img must be > 0"),
    ("distill.current_max_start_epoch=9", "distill.current_max_start_epoch must lie in"),
    ("distill.pix_init=zeros", "distill.pix_init must be one of"),
    ("dtype=float16", "dtype must be one of"),
])
def test_invalid_config_is_rejected_naming_the_key(tmp_path, override, key):
    with pytest.raises(DistillError, match=re.escape(key)):
        run_distill(make_config(tmp_path, override))


def test_cli_error_is_one_line_and_exit_code_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "distill.jobs.distill", *TINY, "distill.ipc=0",
                             f"paths.distill={tmp_path}/d"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "WANDB_MODE": "disabled"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: config: distill.ipc must be >= 1 (got 0)"]
    assert not (tmp_path / "d").exists()


def test_unknown_config_keys_are_rejected(tmp_path):

    with pytest.raises(Exception, match="distill.not_a_key|not_a_key"):
        make_config(tmp_path, "distill.not_a_key=3")
