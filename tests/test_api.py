"""The Python API: the example runs, the API equals the command on the same settings, interop round-trips."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

import distill
from distill.errors import DistillError
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_example_runs_and_beats_the_random_subset():
    module = runpy.run_path(str(ROOT / "examples" / "quickstart.py"))
    records = module["main"](iterations=30, eval_epochs=60, runs=2)
    by_set = {r["set"]: r for r in records}
    assert set(by_set) == {"distilled", "random"} and by_set["distilled"]["runs"] == 2
    assert by_set["distilled"]["mean"] > 0.3  # chance is 0.1; a handful of iterations already learn


def test_api_call_writes_the_same_artifact_as_the_command(tiny_buffer, tmp_path):
    from distill.stages.distill import run_distill

    cfg, folder = tiny_buffer
    by_command = run_distill(make_config(tmp_path / "cmd", f"paths.buffers={folder}"))
    typed = distill.load_config(
        [
            "distill.engine=flat",
            "progress=false",
            "model.options.width=8",
            "distill.ipc=2",
            "distill.iterations=3",
            "distill.syn_steps=3",
            "distill.current_max_start_epoch=1",
            "distill.max_start_epoch=3",
            "distill.expansion_end_iteration=2",
            "distill.eval_every=0",
            "distill.checkpoint_every=2",
        ]
    )
    data = distill.prepare_data(typed.dataset)
    reader = distill.BufferReader(folder)
    result = distill.distill_set(data, reader, typed.model, typed.distill, seed=typed.seed)
    out = distill.write_run_outputs(tmp_path / "api", result, data, typed.model, typed.distill)
    a, _, _ = distill.load_artifact(by_command)
    b, _, _ = distill.load_artifact(out)
    for key in ("images", "label_logits", "lr", "classes"):
        assert torch.equal(a[key], b[key]), key


def test_in_memory_experts_equal_the_buffer_files(tiny_buffer):
    cfg, folder = tiny_buffer
    typed = distill.load_config(["model.options.width=8", "buffers.epochs=4", "buffers.batch_size=32"])
    data = distill.prepare_data(typed.dataset)
    experts = distill.train_experts(data, typed.model, typed.buffers.recipe(), num_experts=2, seed=typed.seed)
    reader = distill.BufferReader(folder)
    assert len(experts) == 2 and experts.epochs == reader.epochs == 4
    for k in range(2):
        for epoch in (0, 4):
            assert torch.equal(experts.params(k, epoch), reader.params(k, epoch))


def test_api_arguments_are_checked_naming_the_argument():
    with pytest.raises(DistillError, match=r"^DistillSettings.ipc must be >= 1 \(got 0\)$"):
        distill.DistillSettings(ipc=0)
    with pytest.raises(DistillError, match=r"^ExpertRecipe.lr must be a number > 0 \(got -1\)$"):
        distill.ExpertRecipe(lr=-1)
    with pytest.raises(DistillError, match=r"^DatasetSpec.normalisation must be one of measured, reference"):
        distill.DatasetSpec("digits", normalisation="imagenet")
    with pytest.raises(DistillError, match="runs must be an integer >= 1"):
        distill.evaluate(None, None, runs=0, baselines=())


def _official_set(folder: Path, n=20, classes=10, soft=True, channels=1, size=8):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(torch.randn(n, channels, size, size), folder / "images_best.pt")
    labels = torch.randn(n, classes) if soft else torch.arange(classes).repeat_interleave(n // classes)
    torch.save(labels, folder / "labels_best.pt")
    torch.save(torch.tensor(0.01), folder / "lr_best.pt")
    return folder


def test_official_sets_round_trip_and_wrong_ones_are_refused(tmp_path):
    source = _official_set(tmp_path / "official")
    synthetic = distill.import_official_set(source, 10, 1, (8, 8))
    assert synthetic["images"].shape == (20, 1, 8, 8) and synthetic["label_logits"].shape == (20, 10)
    out = distill.export_official_set(synthetic, tmp_path / "again")
    again = distill.import_official_set(out, 10, 1, (8, 8))
    assert all(torch.equal(synthetic[k], again[k]) for k in synthetic)
    hard = distill.import_official_set(_official_set(tmp_path / "mtt", soft=False), 10, 1, (8, 8))
    assert hard["classes"].tolist() == [c for c in range(10) for _ in range(2)]
    with pytest.raises(DistillError, match=r"label logits \(20, 10\), expected \(20, 100\)"):
        distill.import_official_set(source, 100, 1, (8, 8))
    with pytest.raises(DistillError, match=r"expected float \[N, 3, 32, 32\]"):
        distill.import_official_set(source, 10, 3, (32, 32))
    with pytest.raises(DistillError, match="exists and is not empty"):
        distill.export_official_set(synthetic, out)
    distill.export_official_set(synthetic, out, overwrite=True)


def test_image_folder_export_writes_one_png_per_image_in_class_folders(tmp_path):
    data = distill.prepare_data("digits")
    synthetic = {
        "images": data.train_images[:20],
        "label_logits": torch.zeros(20, 10),
        "lr": torch.tensor(0.01),
        "classes": torch.arange(10).repeat_interleave(2),
    }
    folder = distill.export_image_folder(synthetic, data.preprocessor, tmp_path / "png", data.raw.class_names)
    pngs = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert len(pngs) == 20 and len({p.split("/")[0] for p in pngs}) == 10
    from PIL import Image

    with Image.open(folder / pngs[0]) as image:
        assert image.size == (8, 8)
    with pytest.raises(DistillError, match="exists and is not empty"):
        distill.export_image_folder(synthetic, data.preprocessor, folder)


def test_official_set_is_evaluated_by_the_eval_command(tmp_path):
    from distill.stages.evaluate import run_evaluate

    source = _official_set(tmp_path / "official")
    records = run_evaluate(
        make_config(
            tmp_path,
            f"eval.artifact={source}",
            "eval.baselines=[]",
            "eval.runs=1",
            "eval.label_modes=[soft]",
            "protocol.epochs=2",
        )
    )
    assert [(r["set"], r["method"], r["labels"]) for r in records] == [("distilled", "official", "soft")]


def test_inspect_describes_sets_buffers_and_official_sets(tiny_buffer, tmp_path, capsys):
    from distill.jobs.inspect import main

    _, folder = tiny_buffer
    main([str(folder)])
    buffer = json.loads(capsys.readouterr().out)
    assert buffer["kind"] == "buffer" and buffer["experts"] == 2 and buffer["epochs"] == 4
    main([str(_official_set(tmp_path / "o"))])
    assert json.loads(capsys.readouterr().out)["shapes"]["labels_best.pt"] == [20, 10]
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "missing")])
    assert stop.value.code == 2 and capsys.readouterr().err.startswith("error: no distilled set at")


def test_eval_opens_a_run_folder_and_refuses_a_checkpoint_without_advising_deletion(tiny_buffer, tmp_path):
    from distill.stages.distill import run_distill

    _, folder = tiny_buffer
    out = run_distill(make_config(tmp_path, f"paths.buffers={folder}"))
    synthetic, _, meta = distill.load_artifact(out)
    assert meta["buffer"]["experts"] == 2 and len(meta["buffer"]["manifest_sha256"]) == 64
    with pytest.raises(DistillError) as refused:
        distill.load_artifact(out / "checkpoint.pt")
    assert "is a torch file (a checkpoint?)" in str(refused.value) and "delete" not in str(refused.value)
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert summary["best"]["score"] is None and summary["stopped_early"] is None
    assert sys.platform != "linux" or (out / "distilled.safetensors").stat().st_mode & 0o044 == 0o044
