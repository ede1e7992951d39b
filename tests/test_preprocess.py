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


def test_reference_constants_replace_measured_statistics_and_change_the_fingerprint():
    from distill.data.preprocess import REFERENCE_STATISTICS

    images = _images()
    fixed = fit_preprocessor(images, zca=False, fixed_statistics=REFERENCE_STATISTICS["cifar10"])
    x = fixed.apply(images[:1])
    expected = (images[:1].float() / 255 - torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2023, 0.1994, 0.2010]
    ).view(1, 3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-6)
    measured = fit_preprocessor(images, zca=False)
    assert fixed.fingerprint()["statistics"] == "reference" and measured.fingerprint()["statistics"] == "measured"
    assert fixed.fingerprint() != measured.fingerprint()
    again = Preprocessor.from_state(fixed.kind, fixed.state(), 0.0, "reference")
    assert again.fingerprint() == fixed.fingerprint()
    assert REFERENCE_STATISTICS["tiny_imagenet"][0] == (0.485, 0.456, 0.406)


def test_fixed_statistics_are_refused_with_zca_and_for_the_wrong_channel_count():
    import pytest

    from distill.errors import DistillError

    with pytest.raises(DistillError, match="standardisation only"):
        fit_preprocessor(_images(), zca=True, fixed_statistics=((0.5,) * 3, (0.2,) * 3))
    with pytest.raises(DistillError, match="1 channels, the images 3"):
        fit_preprocessor(_images(), zca=False, fixed_statistics=((0.5,), (0.2,)))


def test_zca_is_fitted_once_and_loaded_after(tmp_path, monkeypatch):
    import distill.data.prepare as prepare
    from distill.data.prepare import DatasetSpec, prepare_data

    fits = []
    real = prepare.fit_preprocessor
    monkeypatch.setattr(prepare, "fit_preprocessor", lambda *a, **k: fits.append(k.get("zca")) or real(*a, **k))
    spec = DatasetSpec("digits", root=str(tmp_path), zca=True)
    first, again = prepare_data(spec), prepare_data(spec)
    assert fits == [True] and first.fingerprint == again.fingerprint
    assert torch.equal(first.train_images, again.train_images)
    assert list((tmp_path / ".cache").glob("zca_*.safetensors"))
