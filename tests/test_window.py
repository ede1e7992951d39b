import torch

from distill.matching.window import Window, sample_start_epoch, upper_bound


def test_window_upper_bound_grows_linearly_to_max_start_epoch():
    cifar10_ipc10 = Window(min_start=0, initial_max_start=10, max_start=20, expansion_end=1000)
    assert [upper_bound(cifar10_ipc10, it) for it in (0, 99, 100, 550, 999, 1000, 5000)] == [10, 10, 11, 15, 19, 20, 20]
    tiny_ipc1 = Window(0, 15, 20, 2000)
    assert [upper_bound(tiny_ipc1, it) for it in (0, 399, 400, 1999, 2000)] == [15, 15, 16, 19, 20]


def test_window_without_sequential_generation_is_fixed_at_max():
    late = Window(min_start=40, initial_max_start=50, max_start=60, expansion_end=10, sequential=False)
    assert {upper_bound(late, it) for it in (0, 5, 10_000)} == {60}


def test_start_epoch_is_uniform_over_lower_bound_to_upper_bound_exclusive():
    window = Window(min_start=3, initial_max_start=6, max_start=9, expansion_end=30)
    g = torch.Generator().manual_seed(0)
    early = [sample_start_epoch(window, 0, g) for _ in range(400)]
    late = [sample_start_epoch(window, 30, g) for _ in range(400)]
    assert set(early) == {3, 4, 5}
    assert set(late) == {3, 4, 5, 6, 7, 8}
    counts = torch.bincount(torch.tensor(late))[3:]
    assert counts.min() > 40  # roughly uniform (expected ~67 each)
