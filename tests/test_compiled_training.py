"""Training through a torch.compile'd forward (`compile_training`): the same training as eager, a fallback
that never crashes, and the config switch reaching every training loop."""

import importlib

import pytest
import torch

from distill.buffers.recipe import ExpertRecipe, GsamSettings, train_expert
from distill.evaluate.protocol import Protocol
from distill.evaluate.train import train_on_set
from distill.models.compiled import TrainingForward
from distill.models.convnet import ConvNet
from distill.models.flat import FlatModel
from distill.stages.buffers import run_buffers
from distill.stages.distill import run_distill
from distill.stages.evaluate import run_evaluate
from tests.conftest import make_config

# by module path: the package's `distill.evaluate` attribute is the evaluate() function
recipe_module = importlib.import_module("distill.buffers.recipe")
train_module = importlib.import_module("distill.evaluate.train")
run_module = importlib.import_module("distill.matching.run")

# one shape for every compiled test (8 images of 1x12x12 per batch), so Inductor compiles the graph once
IMAGES = torch.randn(16, 1, 12, 12, generator=torch.Generator().manual_seed(3))
LABELS = torch.arange(16) % 4


def network() -> ConvNet:
    torch.manual_seed(0)
    return ConvNet(1, 4, (12, 12), width=8, depth=2)


def relative_gap(a: ConvNet, b: ConvNet) -> float:
    """max |a - b| over every parameter, relative to the parameters' largest magnitude."""
    pairs = list(zip(a.parameters(), b.parameters()))
    scale = max(float(p.detach().abs().max()) for p, _ in pairs)
    return max(float((p - q).detach().abs().max()) for p, q in pairs) / scale


def trained_on_set(compiled: bool) -> ConvNet:
    model = network()
    protocol = Protocol(epochs=3, batch_size=8)
    train_on_set(model, IMAGES, LABELS, protocol, 0.01, torch.Generator().manual_seed(1), compiled=compiled)
    return model


def test_a_compiled_evaluation_training_equals_the_eager_one():
    eager, compiled = trained_on_set(False), trained_on_set(True)
    assert relative_gap(eager, network()) > 1e-3  # it trained
    assert relative_gap(compiled, eager) < 1e-5


@pytest.mark.parametrize("gsam", [False, True])
def test_a_compiled_expert_trajectory_equals_the_eager_one(gsam):
    recipe = ExpertRecipe(epochs=2, batch_size=8, gsam=GsamSettings(enabled=gsam))

    def trajectory(compiled: bool):
        generator = torch.Generator().manual_seed(2)
        return train_expert(network(), recipe, IMAGES, LABELS, IMAGES[:4], LABELS[:4], generator, compiled=compiled)

    eager, compiled = trajectory(False), trajectory(True)
    # against the whole network's scale: the conv biases in front of instance norm never move
    scale = max(float(path.abs().max()) for path in eager.params.values())
    assert max(float((path[-1] - path[0]).abs().max()) for path in eager.params.values()) > 1e-3 * scale
    for name, path in eager.params.items():
        assert float((compiled.params[name] - path).abs().max()) <= 1e-5 * scale, name
    assert compiled.train_loss == pytest.approx(eager.train_loss, rel=1e-5)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning():
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no compiler here")

    model = network()
    forward = TrainingForward(model, compiled=True, backend=broken_backend)
    calls = []

    def backward(net):
        calls.append(net)
        loss = torch.nn.functional.cross_entropy(net(IMAGES[:8]), LABELS[:8])
        loss.backward()
        return loss

    with pytest.warns(RuntimeWarning, match="torch.compile failed for a training step.*no compiler here"):
        loss = forward.step(backward)
    assert not forward.compiled and calls[-1] is model
    reference = network()
    expected = torch.nn.functional.cross_entropy(reference(IMAGES[:8]), LABELS[:8])
    expected.backward()
    assert torch.equal(loss, expected)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad)  # no gradient left over from the failed attempt
    forward.step(backward)
    assert calls[-1] is model  # eager for good


@pytest.mark.parametrize("option", ["compile_training", "mixed_precision"])
def test_compile_training_and_mixed_precision_reach_experts_checks_and_evaluation(option, tmp_path, monkeypatch):
    asked = []

    class Recording(TrainingForward):
        def __init__(self, model, compiled=True, backend="inductor", mixed_precision=False):
            asked.append({"compile_training": compiled, "mixed_precision": mixed_precision}[option])
            super().__init__(model, compiled=False)  # the switch arrived; what it does is tested elsewhere

    students = []

    class RecordingStudent(FlatModel):
        def __init__(self, module, mixed_precision=False):
            students.append(mixed_precision)
            super().__init__(module, mixed_precision)

    monkeypatch.setattr(recipe_module, "TrainingForward", Recording)
    monkeypatch.setattr(train_module, "TrainingForward", Recording)
    monkeypatch.setattr(run_module, "FlatModel", RecordingStudent)
    for switch in ("false", "true"):
        asked.clear()
        cfg = make_config(tmp_path / switch, f"{option}={switch}", "distill.eval_every=3", "eval.runs=1")
        run_buffers(cfg)
        experts = len(asked)
        run_distill(cfg)
        checks = len(asked) - experts
        run_evaluate(cfg)
        assert experts == cfg.buffers.num_experts and checks >= 2 and len(asked) > experts + checks
        assert set(asked) == {switch == "true"}
        # the distillation's student steps follow mixed_precision (compile_training leaves them alone)
        assert students.pop() == (option == "mixed_precision" and switch == "true")
