import pytest
import torch

from distill.errors import DistillError
from distill.models import FlatModel, build_model, model_names


def test_convnet_parameter_counts_match_reference():
    assert FlatModel(build_model("convnet", 3, 10, 32)).num_params == 320_010
    assert FlatModel(build_model("convnet", 3, 100, 32)).num_params == 504_420
    assert FlatModel(build_model("convnet_d4", 3, 200, 64)).num_params == 857_160
    assert FlatModel(build_model("resnet18", 3, 10, 32)).num_params == 11_173_962


@pytest.mark.parametrize(
    "name",
    [
        "convnet",
        "convnet_bn",
        "lenet",
        "alexnet",
        "vgg11",
        "resnet18",
        "resnet18_ap",
        "resnet18_bn",
        "mlp",
        "convnet_d4",
    ],
)
def test_forward_shape_and_functional_call_equal_module(name):
    model = build_model(name, 3, 7, 32, seed=0, dtype=torch.float64).eval()
    flat = FlatModel(model)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    out = model(x)
    assert out.shape == (3, 7)
    assert torch.allclose(flat(flat.flatten(), x), out, atol=1e-10)
    vector = flat.flatten().requires_grad_(True)
    (grad,) = torch.autograd.grad(flat(vector, x).sum(), vector)
    assert grad.shape == vector.shape and grad.abs().sum() > 0


def test_parameter_order_and_names_are_stable():
    a, b = FlatModel(build_model("convnet", 1, 10, 28)), FlatModel(build_model("convnet", 1, 10, 28))
    assert a.names == b.names and a.names[0] == "features.0.weight" and a.names[-1] == "classifier.bias"
    assert a.shapes[0] == (128, 1, 3, 3)


def test_seed_makes_init_reproducible():
    one = FlatModel(build_model("convnet", 1, 10, 28, seed=5)).flatten()
    assert torch.equal(one, FlatModel(build_model("convnet", 1, 10, 28, seed=5)).flatten())
    assert not torch.equal(one, FlatModel(build_model("convnet", 1, 10, 28, seed=6)).flatten())


def test_bad_model_inputs_are_one_line_errors():
    with pytest.raises(DistillError, match="choose one of.*convnet.*resnet18"):
        build_model("transformer", 3, 10, 32)
    with pytest.raises(DistillError, match="cannot take 1x8x8"):
        build_model("lenet", 1, 10, 8)
    assert "vgg11" in model_names()


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_has_a_config_that_builds(name):
    from distill.cli import load_config

    cfg = load_config([f"model={name}"])
    assert cfg.model.name == name
    size = {"convnet_d4": 64, "convnet_d5": 128, "lenet": 28}.get(name, 32)
    net = cfg.model.build(3, 10, size, seed=0)
    assert net(torch.zeros(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("shape", [(3, 4, 32, 32), (2, 5, 7, 9), (4, 6, 3, 2)])
def test_matrix_average_pooling_is_avgpool2d_with_its_first_and_second_derivatives(shape):
    from torch.func import vmap

    from distill.models.layers import AvgPool2x2

    pool, reference = AvgPool2x2(), torch.nn.AvgPool2d(2, 2)
    assert isinstance(build_model("convnet", 1, 10, 28, seed=0, width=4).features[3], AvgPool2x2)  # ConvNet's pool
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(pool(x), reference(x), atol=1e-14, rtol=0)
    g = torch.randn_like(reference(x))
    (ours,) = torch.autograd.grad(pool(x), x, g, create_graph=True)
    (theirs,) = torch.autograd.grad(reference(x), x, g, create_graph=True)
    assert torch.allclose(ours, theirs, atol=1e-14, rtol=0)
    assert torch.autograd.gradgradcheck(pool, (x[:1, :2],))
    assert torch.allclose(vmap(pool)(x.detach()), reference(x.detach()), atol=1e-14, rtol=0)  # stacked nets
    assert torch.allclose(torch.compile(pool, backend="eager")(x.detach()), reference(x.detach()), atol=1e-14, rtol=0)
    with pytest.raises(RuntimeError, match="too small"):  # a map too small to pool fails as AvgPool2d's does
        pool(torch.randn(1, 2, 1, 4))


@pytest.mark.parametrize("channels, padding", [(1, (3, 3)), (1, (1, 2)), (2, (0, 1))])
def test_convolution_by_taps_is_conv2d_with_its_first_and_second_derivatives(channels, padding):
    import torch.nn.functional as F

    from distill.models.layers import conv2d_by_taps

    torch.manual_seed(0)
    x = torch.randn(2, channels, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, channels, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    ours, theirs = conv2d_by_taps(x, w, b, padding), F.conv2d(x, w, b, padding=padding)
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-13, rtol=0)
    assert torch.allclose(conv2d_by_taps(x, w, None, padding), F.conv2d(x, w, padding=padding), atol=1e-13, rtol=0)
    g = torch.randn_like(theirs)
    for a, c in zip(torch.autograd.grad(ours, (x, w, b), g), torch.autograd.grad(theirs, (x, w, b), g)):
        assert torch.allclose(a, c, atol=1e-12, rtol=0)
    # the unrolled engines differentiate the inner gradient again: second derivatives too
    assert torch.autograd.gradgradcheck(lambda x, w, b: conv2d_by_taps(x, w, b, padding), (x, w, b))


def test_convnets_first_layer_on_one_channel_images_runs_by_taps_only_when_compiled_on_cpu(monkeypatch):
    import distill.models.layers as layers

    model = build_model("convnet", 1, 10, 28, seed=0, width=4, dtype=torch.float64)
    first = model.features[0]
    assert isinstance(first, layers.OneChannelConv2d) and first.padding == (3, 3)  # the reference's 28 -> 32
    assert type(build_model("convnet", 3, 10, 32, seed=0, width=4).features[0]) is torch.nn.Conv2d
    calls, by_taps = [], layers.conv2d_by_taps
    monkeypatch.setattr(layers, "conv2d_by_taps", lambda *args: calls.append(1) or by_taps(*args))
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    eager = model(x)
    assert not calls  # eagerly: ATen's convolution
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    assert calls and torch.allclose(compiled, eager, atol=1e-12, rtol=0)
