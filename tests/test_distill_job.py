import json

import pytest
import torch

from distill.errors import DistillError
from distill.io.artifact import load_artifact
from distill.matching.unroll import make_plan, match_flat
from distill.stages.distill import run_distill
from tests.conftest import make_config


def _fixed_loss(reader, student, images, logits, lr):
    """Matching loss averaged over fixed (expert, start epoch, plan) triples: a noise-free yardstick."""
    total = 0.0
    for k in range(len(reader)):
        for t in (0, 1, 2):
            plan = make_plan(len(images), None, 10, torch.Generator().manual_seed(10 * k + t), "")
            total += float(
                match_flat(student, reader.params(k, t), reader.params(k, t + 2), images, logits, None, lr, plan).loss
            )
    return total / (3 * len(reader))


def test_matching_loss_falls_on_digits_from_a_tiny_buffer(tiny_buffer, tmp_path):
    cfg, folder = tiny_buffer
    cfg = make_config(
        tmp_path,
        f"paths.buffers={folder}",
        "distill.iterations=40",
        "distill.dsa=false",
        "distill.syn_steps=10",
        "distill.lr_teacher=0.05",
        "distill.lr_lr=1e-4",
        "distill.lr_img=100",
        "distill.threshold=10",
    )
    import distill.matching.run as job

    captured = {}
    real_run_loop = job.run_loop

    def spy(distiller, *args, **kwargs):
        reader, student = distiller.experts, distiller.student
        before = _fixed_loss(
            reader, student, distiller.images.detach(), distiller.label_logits.detach(), distiller.syn_lr.detach()
        )
        out = real_run_loop(distiller, *args, **kwargs)
        captured["before"] = before
        captured["after"] = _fixed_loss(
            reader, student, distiller.images.detach(), distiller.label_logits.detach(), distiller.syn_lr.detach()
        )
        return out

    job.run_loop = spy
    try:
        run_distill(cfg)
    finally:
        job.run_loop = real_run_loop
    assert captured["after"] < 0.9 * captured["before"]


def test_outputs_are_written_and_self_describing(tiny_buffer, tmp_path):
    _, folder = tiny_buffer
    cfg = make_config(tmp_path, f"paths.buffers={folder}", "distill.eval_every=2", "distill.eval_epochs=2")
    out = run_distill(cfg)
    synthetic, pre, meta = load_artifact(out / "distilled.safetensors")
    assert synthetic["images"].shape == (20, 1, 8, 8) and synthetic["label_logits"].shape == (20, 10)
    assert synthetic["classes"].tolist() == [c for c in range(10) for _ in range(2)]
    assert (
        meta["ipc"] == 2 and meta["selection"] == "best validation accuracy" and meta["selection_split"] == "validation"
    )
    assert meta["dataset_fingerprint"]["dataset"] == "digits" and "mean" in pre
    assert (out / "grid.png").stat().st_size > 100
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3 and 0 <= summary["best"]["score"] <= 1


def test_resume_ends_bit_identical_to_an_uninterrupted_run(tiny_buffer, tmp_path):
    _, folder = tiny_buffer
    checked = ("distill.eval_every=2", "distill.eval_epochs=2")  # checks at iterations 0, 2 and 4
    whole = run_distill(make_config(tmp_path / "a", f"paths.buffers={folder}", "distill.iterations=4", *checked))
    # a finished shorter run, continued by the same command with more iterations
    part = run_distill(make_config(tmp_path / "b", f"paths.buffers={folder}", "distill.iterations=2", *checked))
    first = json.loads((part / "summary.json").read_text())
    resumed = run_distill(make_config(tmp_path / "b", f"paths.buffers={folder}", "distill.iterations=4", *checked))
    for name in ("distilled_last.safetensors", "distilled.safetensors"):
        a, _, _ = load_artifact(whole / name)
        b, _, _ = load_artifact(resumed / name)
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    once, twice = (json.loads((f / "summary.json").read_text()) for f in (whole, resumed))
    # every selection check is listed, the first session's too, and the best is one of them
    assert [c["iteration"] for c in first["checks"]] == [0, 2]
    assert [c["iteration"] for c in once["checks"]] == [0, 2, 4] and twice["checks"] == once["checks"]
    best = max(once["checks"], key=lambda c: c["score"])
    assert once["best"] == twice["best"] == best
    assert twice["initial_label_accuracy"] == once["initial_label_accuracy"] is not None
    # the resumed run's outputs count the first session's seconds too
    assert once["seconds_in_all"] == once["seconds_this_session"] > 0
    assert twice["seconds_in_all"] == pytest.approx(
        first["seconds_this_session"] + twice["seconds_this_session"], abs=0.02
    )


def test_checkpoint_of_another_config_is_refused(tiny_buffer, tmp_path):
    _, folder = tiny_buffer
    run_distill(make_config(tmp_path, f"paths.buffers={folder}", "distill.iterations=2"))
    with pytest.raises(DistillError, match=r"other settings \(distill.lr_img: 100.0 in the checkpoint, 5.0 now\)"):
        run_distill(make_config(tmp_path, f"paths.buffers={folder}", "distill.lr_img=5"))


def test_bad_distill_inputs_are_one_line_errors(tiny_buffer, tmp_path):
    _, folder = tiny_buffer
    with pytest.raises(DistillError, match="window needs 5"):
        run_distill(make_config(tmp_path, f"paths.buffers={folder}", "distill.max_start_epoch=4"))
    with pytest.raises(DistillError, match="does not match this run.*zca"):
        run_distill(make_config(tmp_path, f"paths.buffers={folder}", "dataset.zca=true"))
    with pytest.raises(
        DistillError, match=r"config: distill.ipc exceeds the smallest class \(129 training images\) \(got 500\)"
    ):
        run_distill(make_config(tmp_path, f"paths.buffers={folder}", "distill.ipc=500"))
    with pytest.raises(DistillError, match="no expert buffer"):
        run_distill(make_config(tmp_path, f"paths.buffers={tmp_path}/none"))
    with pytest.raises(DistillError, match="min_start_epoch must be <"):
        run_distill(make_config(tmp_path, f"paths.buffers={folder}", "distill.min_start_epoch=3"))
    with pytest.raises(DistillError, match="distill.batch_syn must be >= 1"):
        run_distill(make_config(tmp_path, f"paths.buffers={folder}", "distill.batch_syn=0"))
    with pytest.raises(DistillError, match="distill.engine must be one of"):
        run_distill(make_config(tmp_path, f"paths.buffers={folder}", "distill.engine=magic"))


def test_real_init_starts_from_one_experts_raw_logits(tiny_buffer, tmp_path):
    from distill.buffers.store import BufferReader
    from distill.models import FlatModel, build_model

    cfg, folder = tiny_buffer
    out = run_distill(make_config(tmp_path, f"paths.buffers={folder}", "distill.pix_init=real", "distill.iterations=0"))
    synthetic, _, _ = load_artifact(out / "distilled.safetensors")
    reader = BufferReader(folder)
    student = FlatModel(build_model(cfg.model.name, 1, 10, 8, seed=0, **cfg.model.options).eval())
    with torch.no_grad():
        expected = student(reader.params(0, reader.epochs), synthetic["images"])
    # expert 0's final logits, unfiltered: not an average over experts, not limited to correct ones
    assert torch.allclose(synthetic["label_logits"], expected, atol=1e-5)
    with torch.no_grad():
        other = student(reader.params(1, reader.epochs), synthetic["images"])
    assert not torch.allclose(synthetic["label_logits"], (expected + other) / 2, atol=1e-3)


@pytest.mark.slow
def test_auto_engine_run_matches_the_compiled_engine_run(tiny_buffer, tmp_path):
    # the whole path (config -> settings -> Distiller -> engine with its budget), inductor-compiled
    _, folder = tiny_buffer
    sets = {}
    for engine in ("compiled", "auto"):
        out = run_distill(
            make_config(
                tmp_path / engine, f"paths.buffers={folder}", f"distill.engine={engine}", "distill.threshold=10"
            )
        )
        sets[engine], _, _ = load_artifact(out / "distilled_last.safetensors")
    for key in ("images", "label_logits", "lr"):
        a, b = sets["compiled"][key], sets["auto"][key]
        assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max()), key
