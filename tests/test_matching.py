import math
import warnings

import pytest
import torch

from distill.errors import DistillError
from distill.matching.init import init_correct, init_label_logits, synthetic_classes
from distill.matching.loop import Distiller, run_loop
from distill.matching.loss import matching_loss, soft_cross_entropy
from distill.matching.programs import StepPrograms
from distill.matching.settings import DistillSettings
from distill.matching.unroll import make_engine, make_plan, match_flat, match_plain, match_programs
from distill.models import FlatModel, build_model, model_names


def test_matching_loss_on_a_hand_computed_case():
    start, target, end = torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0]), torch.tensor([3.0, 3.0])
    assert matching_loss(end, start, target).item() == pytest.approx(1 / 25)
    assert matching_loss(start, start, target).item() == pytest.approx(1.0)


def test_soft_cross_entropy_equals_cross_entropy_on_one_hot_targets():
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 3, 1, 1, 2])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    assert soft_cross_entropy(logits, one_hot).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item()
    )
    uniform = torch.full((5, 4), 0.25)
    assert soft_cross_entropy(torch.zeros(5, 4), uniform).item() == pytest.approx(math.log(4))


@pytest.fixture(autouse=True)
def _fresh_compiler_caches():
    # torch.compile allows a few graphs per function over the whole process; the tests compile many
    torch._dynamo.reset()


def _problem(seed=0, norm="instancenorm"):
    torch.manual_seed(seed)
    dt = torch.float64
    student = FlatModel(build_model("convnet", 1, 4, 8, seed=seed, width=6, depth=2, norm=norm, dtype=dt))
    start = student.flatten()
    target = start + 0.02 * torch.randn_like(start)
    images, logits = torch.randn(8, 1, 8, 8, dtype=dt), torch.randn(8, 4, dtype=dt)
    plan = make_plan(8, 3, 6, torch.Generator().manual_seed(seed), "color_crop_cutout_flip_scale_rotate")
    return student, start, target, images, logits, torch.tensor(0.05, dtype=dt), plan


@pytest.mark.parametrize("seed", [0, 1])
def test_flat_engine_equals_plain_engine_in_float64(seed):
    student, start, target, images, logits, lr, plan = _problem(seed)
    a = match_plain(student, start, target, images, logits, None, lr, plan)
    b = match_flat(student, start, target, images, logits, None, lr, plan)
    assert a.loss == b.loss
    for name in ("grad_images", "grad_labels", "grad_lr"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.abs().max() > 0
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-14), name


def test_engines_agree_with_hard_labels_and_match_finite_differences():
    student, start, target, images, logits, lr, plan = _problem(2)
    hard = torch.nn.functional.one_hot(logits.argmax(1), 4).to(logits.dtype)
    a = match_plain(student, start, target, images, None, hard, lr, plan)
    b = match_flat(student, start, target, images, None, hard, lr, plan)
    assert b.grad_labels is None and torch.allclose(a.grad_images, b.grad_images, rtol=1e-9, atol=1e-14)
    eps = 1e-6
    up = match_flat(student, start, target, images, None, hard, lr + eps, plan).loss
    down = match_flat(student, start, target, images, None, hard, lr - eps, plan).loss
    assert float(b.grad_lr) == pytest.approx(float((up - down) / (2 * eps)), rel=1e-5)


def test_engines_leave_inputs_untouched():
    student, start, target, images, logits, lr, plan = _problem(3)
    copies = [t.clone() for t in (start, images, logits, lr)]
    match_flat(student, start, target, images, logits, None, lr, plan)
    assert all(torch.equal(a, b) for a, b in zip(copies, (start, images, logits, lr)))


def _assert_same_gradients(a, b, rtol, atol):
    assert float(a.loss) == pytest.approx(float(b.loss), rel=rtol)
    for name in ("grad_images", "grad_labels", "grad_lr"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None, name
            continue
        assert x.abs().max() > 0, name
        # compared against the gradient's overall scale: some entries (conv biases before a norm) are ~0
        assert float((x - y).abs().max()) <= rtol * float(x.abs().max()) + atol, name


@pytest.mark.parametrize("compile", [False, True], ids=["eager-programs", "traced-programs"])
def test_program_engine_equals_plain_engine_in_float64(compile):
    # aot_eager traces exactly the graphs inductor would compile (fullgraph, static shapes) without
    # generating code; the minibatch plan has two batch shapes, so a recompile is exercised too
    student, start, target, images, logits, lr, plan = _problem(4)
    programs = StepPrograms(student, compile=compile, backend="aot_eager")
    hard = torch.nn.functional.one_hot(logits.argmax(1), 4).to(logits.dtype)
    for labels, targets in ((logits, None), (None, hard)):
        a = match_plain(student, start, target, images, labels, targets, lr, plan)
        b = match_programs(programs, start, target, images, labels, targets, lr, plan)
        _assert_same_gradients(a, b, rtol=1e-10, atol=1e-15)
    assert programs.compiled == compile


def test_auto_engine_keeping_some_or_all_steps_equals_plain_engine_in_float64():
    # traced (aot_eager) programs: the kept graphs are compiled functions' residuals, as with inductor;
    # minibatches of one shape (8 images in 4s) trace each program once (recompiles: the test above)
    student, start, target, images, logits, lr, plan = _problem(8)
    plan = make_plan(8, 4, 6, torch.Generator().manual_seed(8), plan.dsa_strategy)
    hard = torch.nn.functional.one_hot(logits.argmax(1), 4).to(logits.dtype)
    programs = StepPrograms(student, compile=True, backend="aot_eager")
    one_step = programs.gradient_kept(
        start.clone().requires_grad_(True), images[:4].clone().requires_grad_(True), torch.softmax(logits[:4], 1)
    )[1]
    assert one_step > start.numel() * 8  # at least the activations of a step: more than one parameter vector
    for labels, targets in ((logits, None), (None, hard)):
        a = match_plain(student, start, target, images, labels, targets, lr, plan)
        for budget in (1e12, 2.5 * one_step):  # every step kept; two kept, four recomputed
            b = match_programs(programs, start, target, images, labels, targets, lr, plan, keep_bytes=budget)
            _assert_same_gradients(a, b, rtol=1e-10, atol=1e-15)


def test_auto_engine_keeps_steps_only_within_its_budget(monkeypatch):
    student, start, target, images, logits, lr, plan = _problem(9)
    programs = StepPrograms(student, compile=False)
    kept_calls = []
    original = programs.gradient_kept
    monkeypatch.setattr(programs, "gradient_kept", lambda *a: kept_calls.append(1) or original(*a))
    one_step = original(start.clone().requires_grad_(True), images[:3], torch.softmax(logits[:3], 1))[1]
    # 0.5 steps: the first step is measured, found too large and dropped; 2.5 steps: two are kept
    for budget, expected in ((0.0, 0), (0.5 * one_step, 1), (2.5 * one_step, 2), (1e12, plan.steps)):
        kept_calls.clear()
        match_programs(programs, start, target, images, logits, None, lr, plan, keep_bytes=budget)
        assert len(kept_calls) == expected, (budget, len(kept_calls))


def test_one_channel_images_compile_each_program_once_per_batch_shape():
    # DSA hands back one-channel batches whose strides pass for either layout: they must not each
    # get a graph of their own (a recompile, and then two graphs alternating, every run)
    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    student, start, target, images, logits, lr, plan = _problem(7)
    programs = StepPrograms(student, compile=True, backend=counting_backend)
    for seed in range(3):
        plan = make_plan(8, 3, 6, torch.Generator().manual_seed(seed), plan.dsa_strategy)
        match_programs(programs, start, target, images, logits, None, lr, plan)
    assert programs.compiled and len(graphs) == 4  # (gradient, adjoint) x minibatches of 3 and of 2


SMALLEST_INPUT = {
    "convnet_d4": 64,
    "convnet_d5": 128,
    "vgg11": 32,
    "vgg11_bn": 32,
    "alexnet": 32,
    "lenet": 28,
    "resnet18": 16,
    "resnet18_ap": 16,
    "resnet18_bn": 16,
    "resnet18_bn_ap": 16,
}


# the large ones (11M-parameter ResNets in float64) beyond one batch-norm ResNet run with -m slow
HEAVY = {"vgg11", "vgg11_bn", "resnet18", "resnet18_ap", "resnet18_bn_ap"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in model_names()])
def test_program_engine_equals_plain_engine_for_every_registered_model(name):
    # the programs run the model on copies of its buffers: batch-norm models must work too
    torch.manual_seed(0)
    resolution = SMALLEST_INPUT.get(name, 8)
    options = {"width": 8} if name.startswith("convnet") else {}
    student = FlatModel(build_model(name, 3, 4, resolution, seed=0, dtype=torch.float64, **options))
    start = student.flatten()
    target = start + 0.01 * torch.randn_like(start)
    images, logits = (
        torch.randn(4, 3, resolution, resolution, dtype=torch.float64),
        torch.randn(4, 4, dtype=torch.float64),
    )
    plan = make_plan(4, None, 2, torch.Generator().manual_seed(0), "color_crop_scale")
    lr = torch.tensor(0.01, dtype=torch.float64)
    a = match_plain(student, start, target, images, logits, None, lr, plan)
    b = match_programs(StepPrograms(student, compile=False), start, target, images, logits, None, lr, plan)
    _assert_same_gradients(a, b, rtol=1e-9, atol=1e-14)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning():
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler here")

    student, start, target, images, logits, lr, plan = _problem(5)
    programs = StepPrograms(student, compile=True, backend=broken_backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = match_programs(programs, start, target, images, logits, None, lr, plan)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert "torch.compile failed for the gradient program (RuntimeError: no C++ compiler here)" in messages[0]
    assert not programs.compiled
    _assert_same_gradients(match_plain(student, start, target, images, logits, None, lr, plan), b, 1e-10, 1e-15)


def test_unknown_engine_names_the_valid_ones():
    student = _problem(0)[0]
    with pytest.raises(ValueError, match="plain, flat, compiled"):
        make_engine("fastest", student)


def test_compiled_engine_replays_cuda_graphs_only_on_a_gpu_and_auto_never(monkeypatch):
    import distill.matching.programs as programs_module
    import distill.matching.unroll as unroll

    modes = []

    def recording_compile(fn, **options):
        modes.append(options.get("mode"))
        return fn

    monkeypatch.setattr(programs_module.torch, "compile", recording_compile)
    student = _problem(0)[0]
    assert not unroll.on_cuda(student)
    make_engine("compiled", student)
    monkeypatch.setattr(unroll, "on_cuda", lambda student: True)  # as if the student were on a GPU
    make_engine("compiled", student)
    make_engine("auto", student)  # keeps programs' graphs for backward: no replay
    assert modes == [None, None, "reduce-overhead", "reduce-overhead", None, None]
    StepPrograms(student, compile=True, backend="aot_eager", cuda_graphs=True)  # mode is Inductor's alone
    assert modes[-2:] == [None, None]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inductor_compiled_engine_equals_eager(dtype):
    # float64: equal to the stored-graph engine; float32: equal to the same programs run eagerly
    student, start, target, images, logits, lr, plan = _problem(6)
    student.module.to(dtype)
    start, target, images, logits, lr = (t.to(dtype) for t in (start, target, images, logits, lr))
    plan = make_plan(len(images), None, 4, torch.Generator().manual_seed(6), plan.dsa_strategy)
    programs = StepPrograms(student, compile=True)
    b = match_programs(programs, start, target, images, logits, None, lr, plan)
    assert programs.compiled
    if dtype == torch.float64:
        _assert_same_gradients(match_plain(student, start, target, images, logits, None, lr, plan), b, 1e-10, 1e-15)
    else:
        eager = match_programs(StepPrograms(student, compile=False), start, target, images, logits, None, lr, plan)
        _assert_same_gradients(eager, b, 1e-5, 0.0)


def _fixed(logits):
    return lambda x: logits[: len(x)]


def test_soft_label_init_averages_only_experts_that_classify_correctly():
    classes = torch.tensor([0, 1])
    right = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    also_right = torch.tensor([[4.0, 0.0], [1.0, 0.0]])  # wrong on image 1
    wrong = torch.tensor([[0.0, 9.0], [9.0, 0.0]])
    logits, acc = init_label_logits(
        torch.zeros(2, 1, 2, 2), classes, [_fixed(right), _fixed(also_right), _fixed(wrong)]
    )
    assert torch.equal(logits, torch.tensor([[3.0, 0.0], [0.0, 4.0]])) and acc == 1.0


def test_correct_init_keeps_only_images_an_expert_classifies_correctly():
    images = torch.arange(12.0).view(12, 1, 1, 1)
    labels = torch.tensor([0] * 6 + [1] * 6)

    def expert(x):  # says class 1 for odd pixel values, class 0 otherwise
        odd = (x.view(-1) % 2 == 1).float()
        return torch.stack([1 - odd, odd], 1)

    chosen = init_correct(images, labels, 2, 2, [expert], seed=0)
    values = chosen.view(-1).tolist()
    assert all(v % 2 == 0 for v in values[:2]) and all(v % 2 == 1 for v in values[2:])
    assert all(v < 6 for v in values[:2]) and all(v >= 6 for v in values[2:])
    with pytest.raises(DistillError, match="only 3 images are classified correctly"):
        init_correct(images, labels, 4, 2, [expert], seed=0)


class _ToyExperts:
    """Two synthetic 'experts' whose trajectories come from real SGD on a fixed batch (well-posed targets)."""

    def __init__(self, student, images, labels, epochs=6, lr=0.1):
        self.paths = []
        for seed in range(2):
            w = FlatModel(build_model("convnet", 1, 4, 8, seed=seed, width=6, depth=2)).flatten()
            path = [w.clone()]
            for _ in range(epochs):
                for _ in range(3):
                    w = w.requires_grad_(True)
                    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(student(w, images), labels), w)
                    w = (w - lr * g).detach()
                path.append(w.clone())
            self.paths.append(path)

    def __len__(self):
        return len(self.paths)

    def params(self, k, epoch, device="cpu"):
        return self.paths[k][epoch].to(device)


def _toy_distiller(**overrides):
    torch.manual_seed(0)
    student = FlatModel(build_model("convnet", 1, 4, 8, seed=0, width=6, depth=2))
    real = torch.randn(32, 1, 8, 8)
    labels = torch.arange(32) % 4
    experts = _ToyExperts(student, real, labels)
    options = {
        "syn_steps": 5,
        "expert_epochs": 2,
        "min_start_epoch": 0,
        "current_max_start_epoch": 2,
        "max_start_epoch": 4,
        "expansion_end_iteration": 10,
        "lr_img": 10.0,
        "lr_lr": 1e-5,
        "lr_y": 2.0,
        "dsa": False,
        "engine": "flat",
        **overrides,
    }
    settings = DistillSettings(**options)
    images = real[:8].clone()
    return Distiller(settings, experts, student, images, torch.randn(8, 4), 0.1, synthetic_classes(4, 2), 4, seed=1)


def test_loss_falls_over_iterations():
    distiller = _toy_distiller()
    losses = [distiller.step().loss for _ in range(40)]
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8


def test_threshold_skips_and_gives_up_after_too_many():
    distiller = _toy_distiller(threshold=1e-9, max_consecutive_skips=3)
    before = distiller.images.detach().clone()
    record = distiller.step()
    assert record.skipped.startswith("loss above threshold") and torch.equal(distiller.images.detach(), before)
    distiller.step()
    with pytest.raises(DistillError, match="3 updates in a row were skipped"):
        distiller.step()


def test_non_finite_images_are_skipped_not_applied():
    distiller = _toy_distiller()
    with torch.no_grad():
        distiller.images[0, 0, 0, 0] = float("nan")
    lr_before = float(distiller.syn_lr.detach())
    record = distiller.step()
    assert record.skipped is not None and float(distiller.syn_lr.detach()) == lr_before


def test_learned_lr_is_kept_positive():
    distiller = _toy_distiller(lr_lr=10.0, min_syn_lr=1e-4)
    for _ in range(5):
        distiller.step()
        assert float(distiller.syn_lr.detach()) >= 1e-4


def test_state_dict_round_trip_continues_identically():
    a = _toy_distiller()
    for _ in range(3):
        a.step()
    state = a.state_dict()
    b = _toy_distiller()
    b.load_state_dict(state)
    for _ in range(3):
        ra, rb = a.step(), b.step()
        assert (ra.expert, ra.start_epoch, ra.loss) == (rb.expert, rb.start_epoch, rb.loss)
    assert torch.equal(a.images, b.images) and torch.equal(a.label_logits, b.label_logits)


def test_several_trajectories_per_update_step_along_the_mean_gradient():
    averaged = _toy_distiller(trajectories_per_iteration=3, threshold=10.0)
    by_hand = _toy_distiller(trajectories_per_iteration=3, threshold=10.0)  # the same state
    averaged.step()
    samples = [by_hand.draw() for _ in range(3)]
    results = [by_hand.match(*sample) for sample in samples]
    mean = {name: sum(getattr(r, name) for r in results) / 3 for name in ("grad_images", "grad_labels", "grad_lr")}
    assert len({(k, t) for k, t, _ in samples}) > 1  # really several samples
    from distill.matching.unroll import MatchResult

    by_hand.apply(
        MatchResult(sum(r.loss for r in results) / 3, mean["grad_images"], mean["grad_labels"], mean["grad_lr"])
    )
    assert torch.allclose(averaged.images, by_hand.images, rtol=0, atol=1e-6)
    assert torch.allclose(averaged.label_logits, by_hand.label_logits, rtol=0, atol=1e-6)
    one = _toy_distiller(threshold=10.0)
    one.step()
    assert not torch.allclose(one.images, averaged.images)


@pytest.mark.parametrize("initial", [True, False])
def test_the_initial_set_is_scored_and_can_be_the_selected_one(initial):
    distiller = _toy_distiller(evaluate_initial=initial, threshold=10.0)  # every update taken
    start = distiller.images.detach().clone()
    scored = []

    def falling_score(synthetic):  # every update makes the set "worse": the first set scored wins
        scored.append(distiller.iteration)
        return -distiller.iteration

    run_loop(distiller, 4, 2, falling_score, lambda d: None, 100, evaluate_initial=initial)
    assert scored == ([0, 2, 4] if initial else [2, 4])
    assert distiller.best["iteration"] == scored[0]
    assert torch.equal(distiller.best_set["images"], start) == initial
