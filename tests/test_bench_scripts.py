"""The speed benchmark against the official code, run on a tiny case against a stand-in reference checkout."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_vs_reference as bench  # noqa: E402

# A minimal checkout with the official code's layout and call signatures (not its code): what the benchmark imports.
FAKE_FILES = {
    "networks.py": """
import torch.nn as nn

class ConvNet(nn.Module):
    def __init__(self, channel, num_classes, net_width, net_depth, net_act, net_norm, net_pooling, im_size):
        super().__init__()
        self.conv = nn.Conv2d(channel, net_width, 3, padding=1)
        self.norm = nn.GroupNorm(net_width, net_width)
        self.fc = nn.Linear(net_width * im_size[0] * im_size[1], num_classes)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).relu().flatten(1))
""",
    "reparam_module.py": """
import torch
import torch.nn as nn
from torch.func import functional_call

class ReparamModule(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module
        self.names = [n for n, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]

    def forward(self, x, flat_param):
        pieces = torch.split(flat_param, [s.numel() for s in self.shapes])
        params = {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes)}
        return functional_call(self.module, params, (x,))
""",
    "utils/utils_baseline.py": """
from torchvision import datasets, transforms  # module level, as in the official utils

class ParamDiffAug:
    pass

def DiffAugment(x, strategy="", seed=-1, param=None):
    return x.flip(3)
""",
}


def _fake_reference(root: Path) -> Path:
    for name, text in FAKE_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.slow
def test_benchmark_times_both_sides_and_writes_the_report(tmp_path):
    reference = _fake_reference(tmp_path / "DATM")
    out = tmp_path / "speed.md"
    code = bench.main(
        [
            "--reference-dir",
            str(reference),
            "--cases",
            "tiny",
            "--engines",
            "flat,plain",
            "--iterations",
            "3",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 1x8x8, IPC 1, N=2, width 4 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 3 + 4 * 2
    reference_seconds, flat_seconds, speedup = float(cells[1]), float(cells[3]), cells[6]
    assert reference_seconds > 0 and flat_seconds > 0
    assert speedup.endswith("x") and float(speedup[:-1]) == pytest.approx(reference_seconds / flat_seconds, rel=0.02)
    assert "Project commit:" in text and "torch " in text and "Machine:" in text
    if bench.importlib.util.find_spec("torchvision") is None:
        assert "stand-in" in text


def test_a_missing_reference_checkout_is_one_line(tmp_path, capsys):
    assert bench.main(["--reference-dir", str(tmp_path), "--out", str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "NUS-HPC-AI-Lab/DATM" in err and not (tmp_path / "x.md").exists()


def test_failed_reference_rows_are_extrapolated_linearly_in_steps():
    rows = [
        {"case": (3, 32, 10, 20, 128), "reference": {"median": 29.0}},
        {"case": (3, 32, 10, 40, 128), "reference": {"median": 52.0}},
        {"case": (3, 32, 10, 80, 128), "reference": {"error": "out of memory"}},
        {"case": (3, 32, 1, 80, 128), "reference": {"error": "out of memory"}},
    ]
    bench.extrapolate(rows)
    assert rows[2]["extrapolated"] == 29.0 + 23.0 * 3
    assert "extrapolated" not in rows[3]  # no two measured rows of that shape


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_stage_on_the_cpu(tmp_path):
    import gpu_check

    out = tmp_path / "gpu.md"
    reference = _fake_reference(tmp_path / "DATM")
    assert gpu_check.main(["--dry-run", "--out", str(out), "--reference-dir", str(reference)]) == 0
    text = out.read_text()
    for stage in ("| experts |", "| distill |", "| evaluate |", "| engine benchmark |"):
        assert stage in text
    assert "| distilled | soft |" in text and "| random | hard |" in text and "Numerics:" in text


def _args(**overrides):
    import argparse

    values = dict(
        cases="table",
        engines=["compiled", "compiled+cudagraphs"],
        iterations=3,
        threads=2,
        device="cpu",
        memory_budget=2.0,
        time_limit=300.0,
    )
    return argparse.Namespace(**{**values, **overrides})


def test_report_names_cases_left_out_and_warnings_of_the_engines():
    case = (3, 32, 1, 20, 128)
    measured = {"median": 0.5, "first": 9.0, "peak_mib": 100.0}
    rows = [
        {
            "case": case,
            "reference": {"median": 1.0, "peak_mib": 200.0},
            "compiled": {**measured, "warnings": []},
            "compiled+cudagraphs": {**measured, "median": 0.25, "warnings": ["torch.compile failed for the x"]},
        }
    ]
    text = bench.report(rows, _args(), "abc", "2.x", 60.0, skipped=[(3, 32, 10, 80, 128)])
    row = next(line for line in text.splitlines() if line.startswith("| 3x32x32, IPC 1, N=20 |"))
    assert "| 2.00x |" in row and row.rstrip().endswith("| 4.00x |")
    assert "Not run" in text and "3x32x32, IPC 10, N=80" in text
    assert "`compiled+cudagraphs` warned: torch.compile failed for the x" in text
    assert "reduce-overhead" in text and "--time-limit 300" in text
    assert "Not run" not in bench.report(rows, _args(), "abc", "2.x", 60.0)


def test_a_measurement_past_its_timeout_is_one_error_line():
    spec = {"role": "reference", "case": [1, 8, 1, 2, 4], "threads": 1, "iterations": 3, "device": "cpu"}
    assert bench.measure(spec, timeout=0.01) == {"error": "timed out after 0.01 s"}


@pytest.mark.slow
def test_device_engine_check_passes_on_the_cpu(tmp_path):
    import check_engines_device

    out = tmp_path / "check.txt"
    assert check_engines_device.main(["--device", "cpu", "--dtypes", "float64", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and all(line.startswith("ok") and "against plain" in line for line in lines)
    assert any("compiled+cudagraphs call 2" in line for line in lines)


def test_speed_bound_counts_flops_exactly_linearly_in_student_steps():
    import cpu_speed_bound as bound
    from torch.utils.flop_counter import FlopCounterMode

    case = (1, 8, 1, 3, 4)
    distiller, _ = bound.plain_distiller(case)
    with FlopCounterMode(display=False) as counter:
        distiller.step()
    direct = counter.get_total_flops()
    assert direct > 0 and bound.iteration_flops(case) == direct
    # more student steps cost more products: one step's FLOPs are a forward, backward and double backward
    assert bound.iteration_flops((1, 8, 1, 4, 4)) > direct


def test_speed_bound_row_divides_flops_by_the_best_conv_rate():
    import cpu_speed_bound as bound

    measured = {"flops": 6e9, "conv": {"rate": 3e9}, "plain_seconds": 5.0}
    row = bound.bound_row((3, 32, 1, 20, 128), measured, reference_seconds=4.0)
    assert row["bound_seconds"] == 2.0 and row["max_speedup"] == 2.0 and row["baseline_rate_share"] == 0.5
    without_reference = bound.bound_row((3, 32, 1, 20, 128), measured, reference_seconds=None)
    assert without_reference["max_speedup"] == 2.5  # the plain engine's 5 s stands in


def test_speed_bound_measures_a_tiny_case_and_reports_it(tmp_path):
    import cpu_speed_bound as bound
    import torch

    threads = torch.get_num_threads()
    measured = bound.child({"case": [1, 8, 1, 2, 4], "threads": threads + 1, "iterations": 1})
    assert torch.get_num_threads() == threads  # only the measuring child process sets its threads
    assert measured["flops"] > 0 and measured["plain_seconds"] > 0
    conv = measured["conv"]
    assert conv["flops"] > 0 and conv["rate"] == conv["flops"] / conv["seconds"]
    row = bound.bound_row((1, 8, 1, 2, 4), measured, None)
    args = bound.argparse.Namespace(reference_dir=None, cases="tiny", threads=1, iterations=1)
    text = bound.report([row], args, 1.0)
    line = next(x for x in text.splitlines() if x.startswith("| 1x8x8, IPC 1, N=2, width 4 |"))
    assert line.rstrip().endswith("|") and f"{row['max_speedup']:.2f}x" in line and "`plain` engine" in text


def test_speed_bound_refuses_a_folder_that_is_no_checkout(tmp_path, capsys):
    import cpu_speed_bound as bound

    assert bound.main(["--reference-dir", str(tmp_path), "--out", str(tmp_path / "b.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--reference-dir" in err and not (tmp_path / "b.md").exists()


def test_minibatch_cost_measures_each_case_and_reports_per_step_and_per_image():
    import bench_minibatch

    cases = ((2, 8), (4, 4))
    results = bench_minibatch.measure(cases, rounds=2, width=4, images=8, size=8, compile=False)
    assert set(results) == set(cases)
    for r in results.values():
        assert r["seconds"] > 0 and 0 < r["program_share"] < 1
    text = bench_minibatch.report(results, rounds=2, seconds=1.0)
    rows = [line for line in text.splitlines() if line.startswith("| 2 |") or line.startswith("| 4 |")]
    assert len(rows) == 2
    steps, batch, seconds, per_step, per_image = rows[0].strip("|").split("|")[:5]
    assert (int(steps), int(batch)) == (2, 8)
    assert float(per_step) == pytest.approx(1000 * float(seconds) / 2, rel=0.05, abs=0.06)
    assert float(per_image) == pytest.approx(1e6 * results[(2, 8)]["seconds"] / 16, abs=1)


def test_throughput_compares_compiled_training_with_eager_per_case():
    import bench_throughput

    images, labels = torch.randn(16, 1, 12, 12), torch.arange(16) % 4
    rows = bench_throughput.compiled_case("tiny", images, labels, 8, 2, 2, (8,), 3, batch=8)
    assert [row[0] for row in rows] == ["tiny: expert training, batch 8", "tiny: evaluation training on 8 images"]
    for _, eager, compiled, warm in rows:
        assert eager > 0 and compiled > 0 and warm > 0


def test_a_bf16_engine_column_is_labelled_inexact_and_unknown_variants_are_refused():
    case = (1, 8, 1, 2, 4)
    measured = {"median": 0.5, "first": 1.0, "peak_mib": 10.0, "warnings": []}
    rows = [
        {
            "case": case,
            "reference": {"median": 1.0, "peak_mib": 20.0},
            "compiled": measured,
            "compiled+bf16": {**measured, "median": 0.25},
        }
    ]
    text = bench.report(rows, _args(engines=["compiled", "compiled+bf16"]), "abc", "2.x", 60.0)
    assert "`+bf16`" in text and "Not exact" in text
    assert "`+bf16`" not in bench.report(rows, _args(engines=["compiled"]), "abc", "2.x", 60.0)
    spec = {"case": list(case), "threads": 1, "iterations": 1, "device": "cpu", "memory_budget": 1.0}
    with pytest.raises(ValueError, match="unknown engine variant 'fp8'"):
        bench.project_child({**spec, "engine": "flat+fp8"})
    mixed, _ = bench.build_distiller(case, "flat", "cpu", mixed_precision=True)
    full, _ = bench.build_distiller(case, "flat", "cpu")
    assert mixed.student.mixed_precision and not full.student.mixed_precision


def test_mixed_precision_report_gives_speed_ups_and_how_far_the_gradient_moved():
    import argparse

    import bench_mixed_precision as mp

    distill = {
        (1, 28, 32, 100, 20): {
            "float32": 2.0,
            "bf16": 0.8,
            "cosine": {"grad_images": 0.99512, "grad_labels": 0.998, "grad_lr": float("nan")},
            "relative_error": {"grad_images": 0.0987, "grad_labels": 0.06, "grad_lr": 0.0123},
        }
    }
    text = mp.report(distill, {32: (2500.0, 5800.0)}, argparse.Namespace(rounds=3, cases="quick"), 90.0)
    row = next(line for line in text.splitlines() if line.startswith("| 1x28x28, width 32"))
    assert "| 2.00 | 0.80 | 2.50x | 0.9951 / 0.099 | 0.9980 / 0.060 | 0.012 |" in row
    assert "| 32 | 2500 | 5800 | 2.32x |" in text and "--rounds 3 --cases quick" in text
