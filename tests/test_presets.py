"""Every experiment preset composes, validates, and runs one distillation iteration on fake data and
fake buffers of the right shapes (sizes shrunk: width 8, IPC 2, syn_steps 2, batch_syn <= 8, no ZCA)."""

from pathlib import Path

import pytest
import torch

from distill.buffers.build import model_signature
from distill.buffers.store import write_expert, write_manifest
from distill.cli import CONFIG_DIR
from distill.config import to_config
from distill.data.prepare import prepare_data
from distill.data.registry import ImageData
from distill.stages.distill import run_distill
from tests.conftest import make_config

PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
SHAPES = {
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
    "tiny_imagenet": (3, 64, 200),
    "digits": (1, 8, 10),
    "fashion_mnist": (1, 28, 10),
}


def _fake_dataset(name):
    channels, size, classes = SHAPES[name]
    g = torch.Generator().manual_seed(0)

    def images(n):
        return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)

    labels = torch.arange(classes).repeat_interleave(4)
    return ImageData(
        name,
        images(len(labels)),
        labels,
        images(classes),
        torch.arange(classes),
        tuple(map(str, range(classes))),
        (0.5,) * channels,
        (0.25,) * channels,
    )


def test_all_paper_cells_and_mtt_presets_exist():
    expected = {f"datm_cifar10_ipc{i}" for i in (1, 10, 50, 500, 1000)} | {
        f"datm_cifar100_ipc{i}" for i in (1, 10, 50, 100)
    }
    expected |= {f"datm_tiny_ipc{i}" for i in (1, 10, 50)} | {f"mtt_cifar10_ipc{i}" for i in (1, 10, 50)}
    assert expected <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_runs_one_iteration(preset, tmp_path, monkeypatch):
    cfg = make_config(tmp_path, f"experiment={preset}")
    to_config(cfg).check_for("pipeline")  # the preset as written, before shrinking
    batch = cfg.distill.batch_syn
    cfg = make_config(
        tmp_path,
        f"experiment={preset}",
        "distill.ipc=2",
        "distill.syn_steps=2",
        "distill.iterations=1",
        f"distill.batch_syn={'null' if batch is None else min(batch, 8)}",
        "distill.eval_every=0",
        "dataset.zca=false",
        "dataset.val_per_class=1",
        "model.options.width=8",
        "distill.pix_init=real",
        f"paths.buffers={tmp_path}/buffers",
        f"paths.distill={tmp_path}/out",
    )
    fake = _fake_dataset(cfg.dataset.name)
    monkeypatch.setattr("distill.data.prepare.load_dataset", lambda *a, **k: fake)
    typed = to_config(cfg)
    data = prepare_data(typed.dataset, torch.device("cpu"))
    signature = model_signature(typed.model, data.channels, data.num_classes, data.resolution)
    epochs = typed.distill.required_epochs
    sidecars = []
    for k in range(2):
        g = torch.Generator().manual_seed(k)
        params = {
            n: torch.randn(epochs + 1, *s, generator=g) * 0.1
            for n, s in zip(signature.param_names, signature.param_shapes)
        }
        sidecars.append(write_expert(tmp_path / "buffers", k, params, signature, data.fingerprint, k, [], []))
    write_manifest(tmp_path / "buffers", {}, data.fingerprint, signature, sidecars)
    out = run_distill(cfg)
    assert (out / "distilled.safetensors").is_file()


def test_paper_presets_without_zca_use_the_reference_constants(tmp_path):
    from distill.data.preprocess import REFERENCE_STATISTICS

    chosen = {}
    for preset in PRESETS:
        cfg = make_config(tmp_path, f"experiment={preset}")
        paper = preset.startswith(("datm_", "mtt_"))
        expected = (
            "reference" if paper and not cfg.dataset.zca and cfg.dataset.name in REFERENCE_STATISTICS else "measured"
        )
        assert cfg.dataset.normalisation == expected, preset
        chosen[preset] = cfg.dataset.normalisation
    assert {p for p, n in chosen.items() if n == "reference"} == {
        "mtt_cifar10_ipc50",
        "mtt_cifar100_ipc10",
        "mtt_tiny_ipc1",
        "mtt_tiny_ipc10",
        "mtt_tiny_ipc50",
    }


def test_datm_presets_score_the_initial_set_where_the_official_configs_do(tmp_path):
    # the official configs' skip_first_eva is False for these five cells and True for the other seven
    scored = {
        p
        for p in PRESETS
        if p.startswith("datm_") and make_config(tmp_path, f"experiment={p}").distill.evaluate_initial
    }
    assert scored == {
        "datm_cifar10_ipc50",
        "datm_cifar10_ipc500",
        "datm_cifar100_ipc1",
        "datm_cifar100_ipc50",
        "datm_tiny_ipc10",
    }


def test_paper_presets_hold_their_table_cell_and_little_else():
    import yaml

    allowed = {
        "ipc",
        "iterations",
        "syn_steps",
        "expert_epochs",
        "min_start_epoch",
        "current_max_start_epoch",
        "max_start_epoch",
        "sequential_generation",
        "expansion_end_iteration",
        "lr_img",
        "lr_lr",
        "lr_y",
        "lr_teacher",
        "batch_syn",
        "threshold",
        "pix_init",
        "eval_every",
        "evaluate_initial",
        "eval_epochs",
        "checkpoint_every",
    }
    for preset in PRESETS:
        if not preset.startswith(("datm_", "mtt_")):
            continue
        data = yaml.safe_load((Path(CONFIG_DIR) / "experiment" / f"{preset}.yaml").read_text())
        method = preset.split("_")[0]
        assert {"/recipe": method} in data["defaults"], preset
        assert set(data["distill"]) <= allowed, (preset, set(data["distill"]) - allowed)
        assert "buffers" not in data and "paths" not in data, preset  # the recipe group and hashed folders
