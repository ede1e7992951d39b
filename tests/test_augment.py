import pytest
import torch

from distill.data.augment import GROUPS, apply_dsa, draw_dsa, dsa
from distill.errors import DistillError


def _op(group, x, generator):
    """Apply `group` alone with parameters drawn from `generator`."""
    return apply_dsa(x, draw_dsa(len(x), x.shape[-2], x.shape[-1], generator, group))


@pytest.mark.parametrize("group", GROUPS)
def test_each_op_is_differentiable_and_replayable(group):
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    y = _op(group, x, torch.Generator().manual_seed(3))
    assert y.shape == x.shape
    (grad,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), x)
    assert grad.abs().sum() > 0
    assert torch.equal(y, _op(group, x, torch.Generator().manual_seed(3)))


def test_crop_shifts_with_zero_fill_and_flip_mirrors():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    shifted = _op("crop", x, torch.Generator().manual_seed(1))
    nonzero = shifted[shifted != 0]
    assert set(nonzero.tolist()) <= set(x.flatten().tolist()) and (shifted == 0).any()
    both = torch.stack([x[0], x[0]] * 8)
    flipped = _op("flip", both, torch.Generator().manual_seed(0))
    assert all(torch.equal(f, x[0]) or torch.equal(f, x[0].flip(2)) for f in flipped)
    assert any(torch.equal(f, x[0].flip(2)) for f in flipped)


def _cut_row_spans(size: int) -> set[tuple[int, int]]:
    cut = _op("cutout", torch.ones(3000, 1, size, size), torch.Generator().manual_seed(0))
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


def test_a_plan_moved_to_a_device_replays_the_same_augmentation():
    from distill.matching.unroll import _step_inputs, make_plan

    images, targets = torch.randn(6, 1, 8, 8), torch.softmax(torch.randn(6, 3), 1)
    plan = make_plan(6, 4, 5, torch.Generator().manual_seed(0), "color_crop_cutout_flip_scale_rotate")
    placed = plan.on("cpu", 8, 8)
    assert placed.draws is not None and len(placed.draws) == 5
    for j in range(5):
        a, b = _step_inputs(images, targets, plan, j), _step_inputs(images, targets, placed, j)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_packing_for_one_transfer_keeps_every_value_and_dtype():
    from distill.matching.unroll import _move_together

    tensors = [torch.tensor([3, -2, 7]), torch.tensor([[True, False]]), torch.rand(4, dtype=torch.float64) * 10]
    moved = _move_together(tensors, torch.device("cpu"), pack=True)
    for a, b in zip(tensors, moved):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
