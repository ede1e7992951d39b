import pytest
import torch

from distill.data.augment import GROUPS, _OPS, crop, dsa, flip
from distill.errors import DistillError


@pytest.mark.parametrize("group", GROUPS)
def test_each_op_is_differentiable_and_replayable(group):
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    y = _OPS[group](x, torch.Generator().manual_seed(3))
    assert y.shape == x.shape
    (grad,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), x)
    assert grad.abs().sum() > 0
    assert torch.equal(y, _OPS[group](x, torch.Generator().manual_seed(3)))


def test_crop_shifts_with_zero_fill_and_flip_mirrors():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    shifted = crop(x, torch.Generator().manual_seed(1))
    nonzero = shifted[shifted != 0]
    assert set(nonzero.tolist()) <= set(x.flatten().tolist()) and (shifted == 0).any()
    both = torch.stack([x[0], x[0]] * 8)
    flipped = flip(both, torch.Generator().manual_seed(0))
    assert all(torch.equal(f, x[0]) or torch.equal(f, x[0].flip(2)) for f in flipped)
    assert any(torch.equal(f, x[0].flip(2)) for f in flipped)


def test_strategy_parsing():
    x = torch.randn(2, 1, 8, 8)
    assert dsa(x, torch.Generator(), "") is x
    with pytest.raises(DistillError, match="unknown DSA op"):
        dsa(x, torch.Generator(), "color_blur")
