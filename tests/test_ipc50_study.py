"""scripts/ipc50_study.py: which run it varies, the long evaluation and its report (no training)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import ipc50_study as study  # noqa: E402

from distill.errors import DistillError  # noqa: E402

rfm = study.rfm


def bench_in(tmp_path, dataset="fashion_mnist"):
    bench = rfm.Benchmark(dataset, [])
    bench.work = tmp_path
    return bench


def test_without_the_benchmarks_choices_the_rule_12_choice_and_the_rules_window_are_used(tmp_path, monkeypatch):
    bench = bench_in(tmp_path)
    asked = []
    windows = {"datm_ipc50": [5, 29, 29, 1]}
    monkeypatch.setattr(bench, "own_experts", lambda changes: asked.append(changes) or {"windows": windows})
    spec, source = study.ipc50_spec(bench)
    assert spec == (50, "datm", (5, 29, 29, 1), 10.0, "ZCA")
    assert asked == [{"zca": True}] and source.startswith("FALLBACK_CHOICES")


def test_a_dataset_whose_choice_is_standardised_takes_the_window_from_its_standardised_experts(tmp_path, monkeypatch):
    bench = bench_in(tmp_path, "mnist_5k")
    curve = [0.1 + 0.03 * e for e in range(21)] + [0.73] * 10  # 31 epochs, plateau at epoch 20
    monkeypatch.setattr(bench, "experts", lambda inputs: (tmp_path / f"experts_{inputs}", 1.0))
    monkeypatch.setattr(
        rfm, "validation_curve", lambda cfg, folder: curve if folder.name == "experts_standardised" else []
    )
    spec, source = study.ipc50_spec(bench)
    cfg = bench.config([])
    expected = rfm.windows(rfm.plateau_epoch(curve), cfg.buffers.epochs, cfg.distill.expert_epochs)["datm_ipc50"]
    assert spec == (50, "datm", tuple(expected), 10.0, "standardised") and "mnist_5k" in source
    assert expected[0] == rfm.plateau_epoch(curve) // 2 > 0  # the late window, from this curve's plateau


def test_a_dataset_without_choices_or_fallback_is_one_error_naming_the_benchmark(tmp_path):
    with pytest.raises(DistillError, match="run scripts/reproduce_fashion_mnist.py --dataset mnist first"):
        study.ipc50_spec(bench_in(tmp_path, "mnist"))


def test_the_benchmarks_stored_choices_win_over_the_fallback(tmp_path, monkeypatch):
    bench = bench_in(tmp_path)
    made = {"datm_ipc50": (50, "datm", (4, 20, 20, 1), 100.0, "standardised")}
    monkeypatch.setattr(rfm, "stored_choices", lambda work: {"rule": rfm.CHOICES_RULE})
    monkeypatch.setattr(rfm, "run_specs", lambda choices: made)
    spec, source = study.ipc50_spec(bench)
    assert spec == made["datm_ipc50"] and "choices.json" in source


def test_the_long_evaluation_trains_the_set_1000_epochs_and_is_reused(tmp_path, monkeypatch):
    bench = bench_in(tmp_path)
    out = tmp_path / "budget" / "datm_ipc50"
    out.mkdir(parents=True)
    (out / rfm.TIMING_FILE).write_text(json.dumps({"overrides": ["distill.ipc=50", "distill.syn_steps=80"]}))
    seen = []

    def fake_evaluate(cfg):
        seen.append(cfg)
        return [{"set": "distilled", "mean": 0.86, "std": 0.002, "runs": 3, "lr": 0.0142}]

    monkeypatch.setattr(study, "run_evaluate", fake_evaluate)
    first = study.evaluate_long(bench, out)
    (cfg,) = seen
    assert cfg.protocol.epochs == 1000 and cfg.distill.syn_steps == 80
    assert cfg.eval.baselines == [] and cfg.eval.artifact == str(out) and cfg.eval.label_modes == ["soft"]
    assert Path(cfg.paths.results) == out / "results_1000"  # kept apart from the 500-epoch records
    assert first["test"] == [0.86, 0.002, 3] and first["lr"] == 0.0142 and "random_test" not in first
    assert study.evaluate_long(bench, out) == first and len(seen) == 1


def test_runs_of_one_seed_and_inputs_share_one_random_subset_per_protocol(tmp_path, monkeypatch):
    bench = bench_in(tmp_path)
    outs = {}
    for name, seed in (("datm_ipc50", 0), ("mtt_ipc50_n80", 0), ("datm_ipc50_n80_seed1", 1)):
        outs[name] = tmp_path / "budget" / name
        outs[name].mkdir(parents=True)
        overrides = ["distill.ipc=50", f"seed={seed}", "distill.method=mtt" if "mtt" in name else "distill.ipc=50"]
        (outs[name] / rfm.TIMING_FILE).write_text(json.dumps({"overrides": overrides}))
    seen = []

    def fake_evaluate(cfg):
        seen.append(cfg)
        return [{"set": "random", "mean": 0.9 + cfg.seed / 100 + cfg.protocol.epochs / 1e5, "std": 0.01, "runs": 3}]

    monkeypatch.setattr(study, "run_evaluate", fake_evaluate)
    row, long = {"test": [0.961, 0.001, 3], "evaluate": 40.0}, {"test": [0.963, 0.002, 3], "seconds": 80.0}
    first = study.with_random_subsets(bench, outs["datm_ipc50"], row, long)
    assert [(c.protocol.epochs, c.seed, c.eval.artifact, c.eval.baselines, c.distill.ipc) for c in seen] == [
        (500, 0, None, ["random"], 50),
        (1000, 0, None, ["random"], 50),
    ]
    assert first[0]["random_test"][0] == 0.905 and first[1]["random_test"][0] == 0.91
    assert first[0]["evaluate"] == 40.0 and first[1]["seconds"] == 80.0  # the shared subset's time is apart
    assert sorted(first[2]) == [
        "ipc50_seed0_standardised_width16, 1000 epochs",
        "ipc50_seed0_standardised_width16, 500 epochs",
    ]
    second = study.with_random_subsets(bench, outs["mtt_ipc50_n80"], row, long)  # MTT, same seed and inputs
    assert len(seen) == 2 and second[0]["random_test"] == first[0]["random_test"] and second[2] == first[2]
    third = study.with_random_subsets(bench, outs["datm_ipc50_n80_seed1"], row, long)  # another seed: its own
    assert len(seen) == 4 and third[0]["random_test"][0] == 0.915
    own = {**row, "random_test": [0.8, 0.01, 3]}
    kept = study.with_random_subsets(bench, outs["datm_ipc50"], own, {**long, "random_test": [0.81, 0.01, 3]})
    assert kept[0]["random_test"] == [0.8, 0.01, 3] and kept[1]["random_test"] == [0.81, 0.01, 3] and kept[2] == {}
    assert len(seen) == 4
    # a run in mixed precision shares no subset with the float32 runs: its own, trained in bf16 too
    outs["bf16"] = tmp_path / "budget" / "bf16"
    outs["bf16"].mkdir()
    (outs["bf16"] / rfm.TIMING_FILE).write_text(json.dumps({"overrides": ["distill.ipc=50", "mixed_precision=true"]}))
    mixed = study.with_random_subsets(bench, outs["bf16"], row, long)
    assert len(seen) == 6 and all(c.mixed_precision for c in seen[4:])
    assert sorted(mixed[2]) == [
        "ipc50_seed0_standardised_width16_bf16, 1000 epochs",
        "ipc50_seed0_standardised_width16_bf16, 500 epochs",
    ]


def test_the_report_puts_both_protocols_of_each_run_side_by_side(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ROOT", tmp_path)
    (tmp_path / "results").mkdir()
    row = {
        "width": 32,
        "precision": "bf16 mixed",
        "num_experts": 4,
        "syn_steps": 80,
        "distill": 1500.4,
        "best": {"score": 0.8712, "iteration": 150},
        "skipped": 2,
        "test": [0.854, 0.002, 3],
        "random_test": [0.815, 0.005, 3],
        "evaluate": 131.6,
        "experts_seconds": 600.0,
    }
    long = {"test": [0.861, 0.003, 3], "random_test": [0.82, 0.004, 3], "seconds": 262.0, "lr": 0.0143}
    specs = {
        "datm": ((50, "datm", (5, 29, 29, 1), 10.0, "ZCA"), "FALLBACK_CHOICE"),
        "mtt": ((50, "mtt", (0, 24, 24, 1), 100.0, "standardised"), "choices.json"),
    }
    shared = {"ipc50_seed0_ZCA_width16, 500 epochs": 30.0}
    out = study.write_report("fashion_mnist", {"datm_ipc50_n80": (row, long)}, specs, shared, [], 60.0, 500.0)
    text = out.read_text()
    assert out == tmp_path / "results" / "fashion_mnist_ipc50_study.md"
    line = next(x for x in text.splitlines() if x.startswith("| datm_ipc50_n80 "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == [
        "datm_ipc50_n80",
        "32",
        "bf16 mixed",
        "4",
        "80",
        "1500",
        "0.871 (150)",
        "2",
        "0.0143",
        "85.4 ± 0.2 (n=3)",
        "86.1 ± 0.3 (n=3)",
        "81.5 ± 0.5 (n=3) / 82.0 ± 0.4 (n=3)",
        "132 / 262",
    ]
    assert (
        "- DATM at IPC 50: window [5, 29), lr_img 10, ZCA inputs, learned soft labels; the lr_img and inputs "
        "from FALLBACK_CHOICE." in text
    )
    assert (
        "- MTT at IPC 50: window [0, 24), lr_img 100, standardised inputs, hard labels; the lr_img and inputs "
        "from choices.json." in text
    )
    # the experts: the benchmark's (standardised, MTT's) 500 s and the run's own (whitened) 600 s; the run's
    # 1500.4 + 131.6 + 262 s; the shared random subset's 30 s
    assert "Measured stage time: 50.4 min (the experts 1100 s, counted once" in text and "share, 30 s, counted" in text
    assert "Command: `.venv/bin/python scripts/ipc50_study.py`" in text


def test_an_unknown_flag_is_one_error_naming_the_flags():
    with pytest.raises(DistillError, match="unknown flag --iterations: the flags are --dataset and --only"):
        study.main(["--iterations", "5"])


def test_only_picks_variants_in_their_order_and_the_rest_are_overrides():
    dataset, names, extra = study.parse(
        ["--only", "mtt_ipc50_n80,datm_ipc50", "progress=false", "--dataset", "mnist_5k"]
    )
    assert (dataset, names, extra) == ("mnist_5k", ["datm_ipc50", "mtt_ipc50_n80"], ["progress=false"])
    assert study.parse([]) == ("fashion_mnist", list(study.VARIANTS), [])
    with pytest.raises(DistillError, match="unknown variant datm_ipc5 in --only: choose from datm_ipc50, "):
        study.parse(["--only", "datm_ipc5"])
    with pytest.raises(DistillError, match="--only needs a value"):
        study.parse(["--only"])


def test_mtts_run_takes_mtts_own_choice_and_window(tmp_path, monkeypatch):
    bench = bench_in(tmp_path)  # Fashion-MNIST: DATM whitens, MTT's choice is standardised inputs at lr_img 100
    curve = [0.1 + 0.03 * e for e in range(21)] + [0.73] * 10
    monkeypatch.setattr(bench, "experts", lambda inputs: (tmp_path / f"experts_{inputs}", 1.0))
    monkeypatch.setattr(rfm, "validation_curve", lambda cfg, folder: curve)
    monkeypatch.setattr(bench, "own_experts", lambda changes: pytest.fail("MTT's inputs are not whitened"))
    spec, _ = study.ipc50_spec(bench, "mtt")
    cfg = bench.config([])
    expected = rfm.windows(rfm.plateau_epoch(curve), cfg.buffers.epochs, cfg.distill.expert_epochs)["mtt_ipc50"]
    assert spec == (50, "mtt", tuple(expected), 100.0, "standardised")
    assert expected[0] == 0 and expected != rfm.windows(20, cfg.buffers.epochs, cfg.distill.expert_epochs)["datm_ipc50"]
    assert {method for method, _ in study.VARIANTS.values()} == {"datm", "mtt"}


def test_the_benchmarks_experts_count_once_for_the_runs_on_standardised_inputs(tmp_path, monkeypatch):
    bench = bench_in(tmp_path)
    monkeypatch.setattr(
        rfm, "expert_train_seconds", lambda folder: {bench.config([]).buffers_folder(): 640.0}.get(folder)
    )
    datm_zca = ((50, "datm", (5, 29, 29, 1), 10.0, "ZCA"), "")
    mtt = ((50, "mtt", (0, 24, 24, 1), 100.0, "standardised"), "")
    datm = ((50, "datm", (15, 401, 401, 1), 10.0, "standardised"), "")
    assert study.benchmark_experts_seconds(bench, {"datm": datm_zca, "mtt": mtt}) == 640.0
    assert study.benchmark_experts_seconds(bench, {"datm": datm, "mtt": mtt}) == 640.0  # shared experts, once
    assert study.benchmark_experts_seconds(bench, {"datm": datm_zca}) == 0.0  # whitened runs count their own


def test_runs_that_bring_their_own_experts_train_none_of_the_benchmarks_for_the_window(tmp_path, monkeypatch):
    assert study.needs_window(["datm_ipc50", "datm_ipc50_w32_n80"], "datm")
    assert not study.needs_window(["datm_ipc50_w32_n80", "mtt_ipc50"], "datm")
    bench = bench_in(tmp_path)
    monkeypatch.setattr(bench, "own_experts", lambda changes: pytest.fail("trained the width-16 experts"))
    spec, _ = study.ipc50_spec(bench, "datm", with_window=False)
    assert spec == (50, "datm", None, 10.0, "ZCA")
    # the report names the window each such run took from its own experts
    monkeypatch.setattr(study, "ROOT", tmp_path)
    (tmp_path / "results").mkdir()
    row = {"syn_steps": 80, "distill": 1.0, "best": None, "skipped": 0, "evaluate": 1.0, "window": [4, 29, 29, 1]}
    long = {"seconds": 1.0}
    out = study.write_report("fashion_mnist", {"datm_ipc50_w32_n80": (row, long)}, {"datm": (spec, "F")}, {}, [], 1.0)
    assert "- DATM at IPC 50: the rule's window (datm_ipc50_w32_n80 [4, 29) from its own experts), lr_img 10, " in (
        out.read_text()
    )


def test_a_run_of_some_variants_writes_its_own_report_beside_the_whole_studys(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ROOT", tmp_path)
    (tmp_path / "results").mkdir()
    whole = tmp_path / "results" / "fashion_mnist_ipc50_study.md"
    whole.write_text("the whole study's report\n")
    assert study.report_path("fashion_mnist", list(study.VARIANTS)) == whole
    assert study.report_path("mnist_5k", ["datm_ipc50", "datm_ipc50_experts8"]) == (
        tmp_path / "results" / "mnist_5k_ipc50_study_datm_ipc50+datm_ipc50_experts8.md"
    )
    # main with the stages faked: every row of the invocation lands in the named file, the whole study's stays
    bench = bench_in(tmp_path)
    monkeypatch.setattr(rfm, "ensure_dataset", lambda dataset: None)
    monkeypatch.setattr(rfm, "training_split_size", lambda dataset, extra: 50000)
    monkeypatch.setattr(rfm, "Benchmark", lambda dataset, extra, images: bench)
    spec = ((50, "datm", (5, 29, 29, 1), 10.0, "ZCA"), "F")
    monkeypatch.setattr(study, "ipc50_spec", lambda bench, method, with_window: spec)
    monkeypatch.setattr(study, "benchmark_experts_seconds", lambda bench, specs: 0.0)
    row = {"num_experts": 4, "syn_steps": 20, "distill": 1.0, "best": None, "skipped": 0, "evaluate": 1.0}
    row["window"] = [5, 29, 29, 1]
    monkeypatch.setattr(
        bench, "variant", lambda name, spec, changes: {**row, "num_experts": changes.get("num_experts", 4)}
    )
    monkeypatch.setattr(study, "evaluate_long", lambda bench, out: {"seconds": 1.0})
    monkeypatch.setattr(study, "with_random_subsets", lambda bench, out, row, long: (row, long, {}))
    study.main(["--only", "datm_ipc50_experts8,datm_ipc50"])
    text = (tmp_path / "results" / "fashion_mnist_ipc50_study_datm_ipc50+datm_ipc50_experts8.md").read_text()
    assert [line.split("|")[1:5] for line in text.splitlines() if line.startswith("| datm_")] == [
        [" datm_ipc50 ", " ? ", " float32 ", " 4 "],
        [" datm_ipc50_experts8 ", " ? ", " float32 ", " 8 "],
    ]
    assert "--only datm_ipc50_experts8,datm_ipc50" in text
    assert whole.read_text() == "the whole study's report\n"
