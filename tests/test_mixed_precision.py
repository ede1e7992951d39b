"""bfloat16 autocast (`mixed_precision`): where it applies, how close it stays, and that it is recorded."""

import json

import pytest
import torch

from distill.buffers.store import sidecar_path
from distill.config import Config
from distill.errors import DistillError, SettingError
from distill.evaluate.protocol import Protocol
from distill.evaluate.train import train_on_set
from distill.matching.run import run_identity, run_key
from distill.matching.settings import DistillSettings
from distill.matching.unroll import make_plan, match_flat, match_plain
from distill.models import FlatModel, ModelSpec, build_model
from distill.stages.buffers import run_buffers
from distill.stages.evaluate import run_evaluate
from tests.conftest import make_config


def _conv_output_dtypes(module):
    """Records the dtype of every Conv2d output of `module` into the returned list."""
    seen = []
    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d):
            layer.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    return seen


def test_mixed_precision_student_convolves_in_bfloat16_and_returns_float32_logits():
    net = build_model("convnet", 1, 4, 8, seed=0, width=6, depth=2)
    seen = _conv_output_dtypes(net)
    x = torch.randn(3, 1, 8, 8)
    full, mixed = FlatModel(net), FlatModel(net, mixed_precision=True)
    w = full.flatten()
    exact = full(w, x)
    assert set(seen) == {torch.float32}
    seen.clear()
    approx = mixed(w, x)
    assert set(seen) == {torch.bfloat16}
    assert approx.dtype == torch.float32 and mixed.pure(w, x).dtype == torch.float32
    # close, yet not the same numbers: the option does change the arithmetic
    assert not torch.equal(exact, approx)
    assert torch.allclose(exact, approx, rtol=0.05, atol=0.05 * float(exact.abs().max()))


def _problem():
    torch.manual_seed(0)
    net = build_model("convnet", 1, 4, 8, seed=0, width=16, depth=2)
    w = FlatModel(net).flatten()
    target = w + 0.02 * torch.randn_like(w)
    images, logits = torch.randn(8, 1, 8, 8), torch.randn(8, 4)
    plan = make_plan(8, 3, 6, torch.Generator().manual_seed(0), "color_crop_cutout_flip_scale_rotate")
    return net, w, target, images, logits, torch.tensor(0.05), plan


def _cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_mixed_precision_matching_gradient_points_where_the_float64_one_does():
    net, start, target, images, logits, lr, plan = _problem()
    exact = match_plain(
        FlatModel(net.double()),
        start.double(),
        target.double(),
        images.double(),
        logits.double(),
        None,
        lr.double(),
        plan,
    )
    net = net.float()
    for engine in (match_plain, match_flat):
        mixed = engine(FlatModel(net, mixed_precision=True), start, target, images, logits, None, lr, plan)
        assert float(mixed.loss) == pytest.approx(float(exact.loss), rel=0.05)
        for name in ("grad_images", "grad_labels", "grad_lr"):
            a, b = getattr(exact, name), getattr(mixed, name)
            assert b.dtype == torch.float32, name
            assert _cosine(a, b) > 0.97, (engine.__name__, name, _cosine(a, b))
        # and it is not the exact gradient in disguise
        assert float((mixed.grad_images.double() - exact.grad_images).abs().max()) > 1e-6


def test_mixed_precision_training_lowers_the_loss_and_keeps_float32_parameters():
    net = build_model("convnet", 1, 4, 8, seed=0, width=8, depth=2)
    seen = _conv_output_dtypes(net)
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(32, 1, 8, 8, generator=generator), torch.arange(32) % 4
    protocol = Protocol(epochs=1, dsa=False, batch_size=32)
    first = train_on_set(
        net, images, labels, protocol, 0.05, torch.Generator().manual_seed(1), epochs=0, mixed_precision=True
    )
    last = train_on_set(
        net, images, labels, protocol, 0.05, torch.Generator().manual_seed(1), epochs=40, mixed_precision=True
    )
    assert last < 0.5 * first
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_mixed_precision_config_must_be_a_bool_on_float32():
    with pytest.raises(SettingError, match="mixed_precision.*dtype=float32"):
        Config(mixed_precision=True, dtype="float64")
    with pytest.raises(SettingError, match="mixed_precision.*true or false"):
        Config(mixed_precision="bf16")
    assert not Config().mixed_precision


def test_mixed_precision_gives_a_distillation_run_another_key_and_leaves_others_theirs():
    settings, model = DistillSettings(), ModelSpec()
    before = run_identity(settings, model, 0, torch.float32, {"dataset": "digits"})
    assert "mixed_precision" not in before  # runs made before the option keep their keys
    mixed = run_identity(settings, model, 0, torch.float32, {"dataset": "digits"}, mixed_precision=True)
    assert mixed["mixed_precision"] is True and run_key(mixed) != run_key(before)


def test_mixed_precision_experts_say_so_and_their_folder_refuses_full_precision_ones(tmp_path):
    cfg = make_config(tmp_path, "mixed_precision=true", "buffers.num_experts=1", "buffers.epochs=4")
    folder = run_buffers(cfg)
    side = json.loads(sidecar_path(folder, 0).read_text())
    assert side["mixed_precision"] is True
    expert = folder / side["file"]
    made = expert.read_bytes()
    with pytest.raises(DistillError, match="mixed precision and this run asks for full.*paths.buffers"):
        run_buffers(make_config(tmp_path, "buffers.num_experts=1", "buffers.epochs=4"))
    assert expert.read_bytes() == made  # refused, not overwritten
    run_buffers(cfg)  # the same precision resumes: the expert is kept as it is
    assert expert.read_bytes() == made


def test_mixed_precision_evaluation_names_it_in_each_record_and_needs_one_network_at_a_time(tmp_path):
    cfg = make_config(
        tmp_path,
        "mixed_precision=true",
        "eval.baselines=[random]",
        "eval.runs=1",
        "eval.label_modes=[hard]",
        "distill.ipc=1",
        "protocol.epochs=2",
    )
    records = run_evaluate(cfg)
    assert records and all(r["protocol"]["mixed_precision"] is True for r in records)
    plain = run_evaluate(
        make_config(
            tmp_path / "full",
            "eval.baselines=[random]",
            "eval.runs=1",
            "eval.label_modes=[hard]",
            "distill.ipc=1",
            "protocol.epochs=2",
        )
    )
    assert all("mixed_precision" not in r["protocol"] for r in plain)
    with pytest.raises(DistillError, match="mixed_precision.*eval.parallel=1"):
        run_evaluate(
            make_config(
                tmp_path / "stacked",
                "mixed_precision=true",
                "eval.baselines=[random]",
                "eval.runs=2",
                "eval.parallel=2",
                "eval.label_modes=[hard]",
                "distill.ipc=1",
                "protocol.epochs=2",
            )
        )


@pytest.mark.slow  # ~20 s of Inductor compiling; scripts/bench_mixed_precision.py runs the same path
def test_mixed_precision_program_engine_traces_the_autocast_and_agrees_with_the_eager_one():
    from distill.matching.programs import StepPrograms
    from distill.matching.unroll import match_programs

    torch._dynamo.reset()
    net, start, target, images, logits, lr, plan = _problem()
    student = FlatModel(net, mixed_precision=True)
    seen = _conv_output_dtypes(net)
    eager = match_flat(student, start, target, images, logits, None, lr, plan)
    assert set(seen) == {torch.bfloat16}
    # Inductor, the engine's own backend: aot_eager's runner rejects the bfloat16 / float32 matrix product
    # that the traced double backward holds, which Inductor's lowering casts
    programs = StepPrograms(student, compile=True)
    traced = match_programs(programs, start, target, images, logits, None, lr, plan)
    assert programs.compiled
    for name in ("grad_images", "grad_labels", "grad_lr"):
        assert _cosine(getattr(eager, name), getattr(traced, name)) > 0.99, name
