import json
import os
import subprocess
import sys

import pytest
import torch

from distill.buffers.legacy import import_reference_buffers
from distill.buffers.recipe import ExpertRecipe, train_expert
from distill.buffers.store import BufferReader, ModelSignature, expert_path
from distill.errors import DistillError
from distill.models import FlatModel, build_model
from distill.stages.buffers import run_buffers
from tests.conftest import make_config


def test_trajectory_shapes_and_epoch_zero_is_initialisation():
    model = build_model("convnet", 1, 10, 8, seed=0, width=8, depth=2)
    init = FlatModel(model).flatten()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8), torch.arange(64) % 10
    traj = train_expert(model, ExpertRecipe(epochs=3, batch_size=16), x, y, x[:10], y[:10], g)
    flat = FlatModel(model)
    assert list(traj.params) == flat.names
    assert all(t.shape == (4, *s) for t, s in zip(traj.params.values(), flat.shapes))
    assert torch.equal(torch.cat([t[0].reshape(-1) for t in traj.params.values()]), init)
    assert torch.equal(torch.cat([t[3].reshape(-1) for t in traj.params.values()]), flat.flatten())
    assert len(traj.train_loss) == 3 and len(traj.test_accuracy) == 3


def test_reader_returns_the_models_parameters_at_each_epoch(tiny_buffer):
    cfg, folder = tiny_buffer
    reader = BufferReader(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["epochs"] == 4 and len(manifest["experts"]) == 2
    assert (
        len(manifest["experts"][0]["train_loss"]) == 4
        and manifest["model"]["num_params"] == reader.signature.num_params
    )
    with torch.no_grad():
        from safetensors.torch import load_file

        whole = load_file(expert_path(folder, 1))
    for epoch in (0, 2, 4):
        expected = torch.cat([whole[name][epoch].reshape(-1) for name in reader.signature.param_names])
        assert torch.equal(reader.params(1, epoch), expected)
    # epoch 0 is the freshly built model with the expert's own seed
    model = build_model(cfg.model.name, 1, 10, 8, seed=manifest["experts"][0]["seed"], **cfg.model.options)
    assert torch.equal(reader.params(0, 0), FlatModel(model).flatten())


def test_reader_refuses_short_buffers_and_tampered_files(tiny_buffer, tmp_path):
    _, folder = tiny_buffer
    with pytest.raises(DistillError, match="has 4 epochs but the window needs 9"):
        BufferReader(folder, min_epochs=9)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in folder.iterdir():
        copy.joinpath(f.name).write_bytes(f.read_bytes())
    raw = bytearray(expert_path(copy, 0).read_bytes())
    raw[-3] ^= 0xFF
    expert_path(copy, 0).write_bytes(bytes(raw))
    with pytest.raises(DistillError, match="fails its sha256 check"):
        BufferReader(copy).params(0, 1)


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch, tiny_buffer):
    _, reference = tiny_buffer
    cfg = make_config(tmp_path)
    import distill.buffers.build as job

    real_write = job.write_expert
    calls = []

    def dying_write(folder, index, *args, **kwargs):
        if index == 1:
            (folder / ".expert_0001.safetensors.dead.tmp").write_bytes(b"partial")
            raise KeyboardInterrupt  # stands for a kill in the middle of expert 1
        calls.append(index)
        return real_write(folder, index, *args, **kwargs)

    monkeypatch.setattr(job, "write_expert", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run_buffers(cfg)
    assert not (tmp_path / "buffers" / "manifest.json").exists()
    monkeypatch.setattr(job, "write_expert", real_write)
    retrained = []
    monkeypatch.setattr(job, "train_expert", lambda *a, **k: retrained.append(1) or job_train(*a, **k))
    run_buffers(cfg)
    assert len(retrained) == 1  # expert 0 was complete and verified, only expert 1 was redone
    for k in range(2):
        assert expert_path(tmp_path / "buffers", k).read_bytes() == expert_path(reference, k).read_bytes()


def job_train(*args, **kwargs):
    return train_expert(*args, **kwargs)


def test_two_gloo_processes_write_byte_identical_experts(tmp_path):
    # each rank runs cores / 2 threads; float sums depend on the thread count, so the single process
    # compared against runs with that many threads too
    threads = str(max(1, os.cpu_count() // 2))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "WANDB_MODE": "disabled"}
    from tests.conftest import TINY

    job = ["-m", "distill.jobs.buffers", *TINY, "device=cpu"]
    single = subprocess.run(
        [sys.executable, *job, f"paths.buffers={tmp_path}/a"], env=env, capture_output=True, text=True, timeout=300
    )
    assert single.returncode == 0, single.stderr[-2000:]
    reference = tmp_path / "a"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        *job,
        f"paths.buffers={tmp_path}/b",
    ]
    result = subprocess.run(
        cmd, env={**env, "OMP_NUM_THREADS": str(os.cpu_count())}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for k in range(2):
        assert expert_path(tmp_path / "b", k).read_bytes() == expert_path(reference, k).read_bytes()
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["experts"][1]["seed"] > 0


def test_folder_with_another_models_buffers_is_refused(tiny_buffer, tmp_path):
    cfg, folder = tiny_buffer
    other = make_config(tmp_path, f"paths.buffers={folder}", "model.options.width=16")
    with pytest.raises(DistillError, match="holds other buffers.*parameters"):
        run_buffers(other)
    zca = make_config(tmp_path, f"paths.buffers={folder}", "dataset.zca=true")
    with pytest.raises(DistillError, match="zca"):
        run_buffers(zca)


def test_too_few_epochs_and_unknown_model_are_config_errors(tmp_path):
    with pytest.raises(DistillError, match="buffers.epochs must be >="):
        run_buffers(make_config(tmp_path, "buffers.epochs=2"))
    with pytest.raises(DistillError, match="unknown model 'nope'"):
        run_buffers(make_config(tmp_path, "model.name=nope"))


def _signature():
    flat = FlatModel(build_model("mlp", 1, 3, 4, hidden=5))
    return flat, ModelSignature("mlp", {"hidden": 5}, tuple(flat.names), tuple(flat.shapes))


def test_import_of_reference_replay_buffers(tmp_path):
    flat, signature = _signature()
    experts = [[[torch.randn(s) for s in flat.shapes] for _epoch in range(3)] for _expert in range(2)]
    torch.save(experts, tmp_path / "replay_buffer_0.pt")
    torch.save(experts[:1], tmp_path / "replay_buffer_1.pt")
    sidecars = import_reference_buffers(tmp_path, tmp_path / "out", signature, {"dataset": "x"})
    assert len(sidecars) == 3
    from distill.buffers.store import write_manifest

    write_manifest(tmp_path / "out", {}, {"dataset": "x"}, signature, sidecars)
    reader = BufferReader(tmp_path / "out")
    assert torch.equal(reader.params(1, 2), torch.cat([t.reshape(-1) for t in experts[1][2]]))
    assert torch.equal(reader.params(2, 0), torch.cat([t.reshape(-1) for t in experts[0][0]]))


def _separable(n_per_class=30, classes=3):
    """1x4x4 images whose class c lights pixel c: linearly separable, for a quickly trained expert."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = 0.1 * torch.randn(len(labels), 1, 4, 4, generator=g)
    images.view(len(labels), -1)[torch.arange(len(labels)), labels] += 3.0
    return images, labels


def test_import_refuses_an_expert_whose_class_order_differs(tmp_path):
    from distill.buffers.legacy import check_expert_classifies

    # a fixed init: about one in eight random inits of this 5-unit MLP leaves a class unlearnt (dead units)
    torch.manual_seed(0)
    flat, signature = _signature()
    images, labels = _separable()
    opt = torch.optim.Adam(flat.module.parameters(), lr=0.05)
    start = [p.detach().clone() for p in flat.module.parameters()]
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(flat.module(images), labels).backward()
        opt.step()
    trained = [p.detach().clone() for p in flat.module.parameters()]
    with torch.no_grad():
        assert torch.equal(flat.module(images).argmax(1), labels)
    torch.save([[start, trained]], tmp_path / "replay_buffer_0.pt")

    def check(params, source):
        return check_expert_classifies(params, flat, images, labels, 3, source)

    assert len(import_reference_buffers(tmp_path, tmp_path / "ok", signature, {}, check)) == 1
    # the same expert with its output rows permuted (another class order) scores ~0 % and is refused
    permuted = [t.clone() for t in trained]
    permuted[-2], permuted[-1] = permuted[-2][[1, 2, 0]], permuted[-1][[1, 2, 0]]
    source = tmp_path / "permuted"
    source.mkdir()
    torch.save([[start, permuted]], source / "replay_buffer_0.pt")
    with pytest.raises(
        DistillError,
        match=r"replay_buffer_0.pt expert 0: its last checkpoint classifies 0.0% of 90 "
        r"test images correctly \(chance 33.3%, needed 50%\)",
    ):
        import_reference_buffers(source, tmp_path / "refused", signature, {}, check)
    assert not (tmp_path / "refused").exists()


class _Evil:
    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"echo PWNED > {self.sentinel}",))


def test_reference_file_asking_for_globals_is_refused(tmp_path):
    flat, signature = _signature()
    sentinel = tmp_path / "pwned"
    torch.save([_Evil(sentinel)], tmp_path / "replay_buffer_0.pt")
    with pytest.raises(DistillError, match="refusing to load"):
        import_reference_buffers(tmp_path, tmp_path / "out", signature, {})
    assert not sentinel.exists()
    torch.save([[[torch.randn(2, 2)]]], tmp_path / "replay_buffer_0.pt")
    with pytest.raises(DistillError, match="holds 1 tensors, model 'mlp' has 6"):
        import_reference_buffers(tmp_path, tmp_path / "out", signature, {})


def test_gsam_reduces_to_plain_gradient_and_to_sam():
    from distill.buffers.gsam import gsam_gradients

    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    a = torch.randn(5)
    loss_fn = lambda: ((w * a).sin() ** 2).sum()  # noqa: E731
    (plain,) = torch.autograd.grad(loss_fn(), [w])
    no_radius, _ = gsam_gradients([w], loss_fn, rho=0.0, alpha=0.3)
    assert torch.allclose(no_radius[0], plain, atol=1e-6)
    sam, _ = gsam_gradients([w], loss_fn, rho=0.05, alpha=0.0, adaptive=False)
    with torch.no_grad():
        shifted = (w + 0.05 * plain / plain.norm()).requires_grad_(True)
    (expected,) = torch.autograd.grad(((shifted * a).sin() ** 2).sum(), [shifted])
    assert torch.allclose(sam[0], expected, atol=1e-6)
    assert torch.equal(w, w.detach())  # weights restored
    gsam, _ = gsam_gradients([w], loss_fn, rho=0.05, alpha=0.3, adaptive=False)
    orthogonal = plain - (plain @ expected) / expected.norm() ** 2 * expected
    assert torch.allclose(gsam[0], expected - 0.3 * orthogonal, atol=1e-5)


@pytest.mark.parametrize("name,gsam", [("convnet", False), ("convnet", True), ("convnet_bn", False)])
def test_experts_trained_at_once_equal_experts_trained_one_by_one(name, gsam):
    from distill.buffers.recipe import GsamSettings, train_experts_stacked

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g, dtype=torch.float64), torch.arange(40) % 4
    recipe = ExpertRecipe(epochs=2, batch_size=16, momentum=0.5, weight_decay=1e-3, gsam=GsamSettings(enabled=gsam))

    def fresh(seed):
        return build_model(name, 1, 4, 8, seed=seed, width=4, depth=1, dtype=torch.float64)

    seeds = [11, 12, 13]
    one_by_one = [train_expert(fresh(s), recipe, x, y, x[:10], y[:10], torch.Generator().manual_seed(s)) for s in seeds]
    at_once = train_experts_stacked(
        [fresh(s) for s in seeds], recipe, x, y, x[:10], y[:10], [torch.Generator().manual_seed(s) for s in seeds]
    )
    for a, b in zip(one_by_one, at_once):
        assert list(a.params) == list(b.params)
        for name_ in a.params:
            assert torch.allclose(a.params[name_], b.params[name_], rtol=1e-9, atol=1e-12), name_
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-9) and a.test_accuracy == b.test_accuracy
    assert not torch.equal(at_once[0].params["classifier.weight"], at_once[1].params["classifier.weight"])


def test_each_expert_file_is_hashed_once_until_it_changes(tiny_buffer, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import distill.io.tensors as tensors

    _, reference = tiny_buffer
    folder = tmp_path / "copy"
    shutil.copytree(reference, folder)
    (folder / tensors.VERIFIED_CACHE).unlink(missing_ok=True)
    hashed = []
    real = tensors.sha256_file
    monkeypatch.setattr(tensors, "sha256_file", lambda path, *a: hashed.append(Path(path).name) or real(path, *a))
    BufferReader(folder).params(0, 1)
    BufferReader(folder).params(0, 2)  # another job: served from .verified.json
    assert hashed == ["expert_0000.safetensors"]
    path = expert_path(folder, 0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, new content and mtime
    path.write_bytes(bytes(data))
    with pytest.raises(DistillError, match="fails its sha256 check"):
        BufferReader(folder).params(0, 1)
