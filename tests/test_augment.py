import pytest
import torch

from distill.data.augment import GROUPS, _OPS, crop, cutout, dsa, flip
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


def _cut_row_spans(size: int) -> set[tuple[int, int]]:
    cut = cutout(torch.ones(3000, 1, size, size), torch.Generator().manual_seed(0))
    rows = (cut == 0).any(dim=3)[:, 0]  # [n, size]: which rows the square touches
    return {(int(r.nonzero().min()), int(r.nonzero().max())) for r in rows}


def test_cutout_centre_range_matches_the_reference():
    # even side (16 of 32): centre in [0, 32], so a square can hang half off the bottom (rows 24..31)
    spans = _cut_row_spans(32)
    assert len(spans) == 33 and (24, 31) in spans and (0, 7) in spans
    # odd side (3 of 5): centre in [0, 5)
    spans = _cut_row_spans(5)
    assert spans == {(0, 1), (0, 2), (1, 3), (2, 4), (3, 4)}


def test_strategy_parsing():
    x = torch.randn(2, 1, 8, 8)
    assert dsa(x, torch.Generator(), "") is x
    with pytest.raises(DistillError, match="unknown DSA op"):
        dsa(x, torch.Generator(), "color_blur")
