import torch

from distill.data.preprocess import Preprocessor, fit_preprocessor


def _images(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 1, 1, generator=g) * 200
    return (base + torch.rand(n, 3, 4, 4, generator=g) * 55).to(torch.uint8)


def test_zca_whitens_training_data_and_inverts():
    images = _images()
    pre = fit_preprocessor(images, zca=True, zca_eps=1e-5)
    white = pre.apply(images).reshape(len(images), -1).double()
    cov = torch.cov(white.T)
    assert torch.allclose(cov, torch.eye(48, dtype=torch.float64), atol=2e-2)
    assert torch.allclose(pre.invert(pre.apply(images)), images.float() / 255, atol=1e-4)


def test_standardize_gives_zero_mean_unit_std_and_round_trips_state():
    images = _images()
    pre = fit_preprocessor(images, zca=False)
    x = pre.apply(images)
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    again = Preprocessor.from_state(pre.kind, pre.state())
    assert again.fingerprint() == pre.fingerprint()
    assert fit_preprocessor(_images(seed=1), zca=False).fingerprint() != pre.fingerprint()
    assert fit_preprocessor(images, zca=True).fingerprint()["kind"] == "zca"
