import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

from distill.errors import DistillError
from distill.evaluate.baselines import random_subset
from distill.evaluate.protocol import Protocol, decay_epoch, lr_at_epoch
from distill.evaluate.records import inputs_label, make_record, read_records, write_record
from distill.evaluate.tables import gap_closed, results_table
from distill.evaluate.train import set_loss, train_and_test
from distill.io.artifact import load_artifact, save_artifact
from distill.models import build_model
from distill.stages.distill import run_distill
from distill.stages.evaluate import run_evaluate
from tests.conftest import TINY, make_config


def test_protocol_decays_once_at_the_midpoint():
    assert decay_epoch(1000) == 501
    assert lr_at_epoch(0, 0.01, 1000) == 0.01 and lr_at_epoch(501, 0.01, 1000) == 0.01
    assert lr_at_epoch(502, 0.01, 1000) == pytest.approx(0.001) and lr_at_epoch(1000, 0.01, 1000) == pytest.approx(
        0.001
    )


def test_soft_and_hard_losses_on_a_hand_made_case():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    hard = set_loss(logits, torch.tensor([0, 1]))
    expected_hard = (torch.log(1 + torch.exp(torch.tensor(-2.0))) + torch.log(torch.tensor(2.0))) / 2
    assert hard.item() == pytest.approx(expected_hard.item())
    soft = set_loss(logits, torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    log_p = torch.log_softmax(logits, 1)
    assert soft.item() == pytest.approx(-(0.5 * log_p).sum(1).mean().item())


def test_random_baseline_is_class_balanced_and_seeded():
    labels = torch.arange(200) % 4
    images = torch.arange(200.0).view(200, 1, 1, 1)
    x, y = random_subset(images, labels, 5, 4, seed=3)
    assert y.tolist() == [c for c in range(4) for _ in range(5)]
    assert torch.equal(labels[x.view(-1).long()], y)
    assert torch.equal(x, random_subset(images, labels, 5, 4, seed=3)[0])
    assert not torch.equal(x, random_subset(images, labels, 5, 4, seed=4)[0])


def test_tiny_evaluation_on_digits_beats_chance_clearly(tiny_cfg):
    from distill.config import to_config
    from distill.data.prepare import prepare_data

    data = prepare_data(to_config(tiny_cfg).dataset, torch.device("cpu"))
    x, y = random_subset(data.train_images, data.train_labels, 10, 10, seed=0)
    model = build_model("convnet", 1, 10, 8, seed=0, width=16, depth=2)
    acc = train_and_test(model, x, y, data.test_images, data.test_labels, Protocol(epochs=60, batch_size=50), 0.01, 0)
    assert acc > 0.6  # chance is 0.1


def _record(set_kind="distilled", accuracies=(0.5,), **fields):
    """A record of dataset "d" with the defaults the table tests share; `fields` override them."""
    method = {"distilled": "datm"}.get(set_kind, set_kind)
    defaults = dict(
        dataset="d",
        set_kind=set_kind,
        method=method,
        ipc=None if set_kind == "full" else 1,
        labels="soft" if set_kind == "distilled" else "hard",
        architecture="convnet",
        protocol={},
        lr=0.01,
        seeds=list(range(1, len(accuracies) + 1)),
        accuracies=list(accuracies),
        seconds=1.0,
    )
    return make_record(**{**defaults, **fields})


def test_record_round_trip_and_table(tmp_path):
    record = _record(accuracies=[0.5, 0.7], protocol={"epochs": 3})
    path = write_record(tmp_path, record)
    assert json.loads(path.read_text()) == record and read_records(tmp_path) == [record]
    assert record["mean"] == pytest.approx(0.6) and record["std"] == pytest.approx(0.1)
    others = [_record("random", accuracies=[0.4]), _record("full", accuracies=[0.8])]
    table = results_table([record, *others], "d")
    assert "| 1 | convnet | datm | – | 60.0 ± 10.0 (n=2) | – | 40.0 ± 0.0 (n=1) | 80.0 ± 0.0 (n=1) | 50 % |" in table
    assert gap_closed(0.6, 0.4, 0.8) == pytest.approx(0.5)
    assert "CPU cores" in record["machine"] and f"machines: {record['machine']}." in table
    assert "Records: 3 (3 s of evaluation in all)" in table


def test_table_shows_the_newest_record_of_a_cell_whatever_the_file_order(tmp_path):
    def distilled(accuracy, sha, finished_at):
        return {**_record(accuracies=[accuracy], artifact_sha256=sha), "finished_at": finished_at}

    old, new = distilled(0.9, "ff", "2026-01-01T00:00:00+00:00"), distilled(0.3, "00", "2026-02-01T00:00:00+00:00")
    for records in ([old, new], [new, old]):
        table = results_table(records, "d")
        assert "30.0 ± 0.0 (n=1)" in table and "90.0" not in table and "Records: 1 (1 s of evaluation in all);" in table


def test_sets_picked_by_different_rules_get_rows_of_their_own():
    def distilled(accuracy, rule):
        return _record(accuracies=[accuracy], extra={"selection": rule})

    table = results_table([distilled(0.5, "best validation accuracy"), distilled(0.6, "best test accuracy")], "d")
    assert "| 1 | convnet | datm | best test accuracy | 60.0 ± 0.0 (n=1) |" in table
    assert "| 1 | convnet | datm | best validation accuracy | 50.0 ± 0.0 (n=1) |" in table
    assert "| selection rule |" in table


def test_baselines_on_whitened_inputs_keep_files_and_rows_of_their_own(tmp_path):
    zca = {"preprocess": {"kind": "zca", "zca_eps": 0.1, "statistics": "measured", "sha256": "ab"}}
    standardised = {"preprocess": {"kind": "standardize", "zca_eps": 0.0, "statistics": "measured", "sha256": "cd"}}
    stamp = {"finished_at": "2026-01-01T00:00:00+00:00"}
    records = [
        _record("random", accuracies=[0.4], extra=standardised),
        _record("full", accuracies=[0.8], extra=standardised),
        _record("random", accuracies=[0.3], extra=zca),
        _record("full", accuracies=[0.7], extra=zca),
        {**_record(accuracies=[0.9], artifact_sha256="01", extra=standardised), **stamp},  # made again on ZCA:
        _record(accuracies=[0.5], artifact_sha256="02", extra=zca),
        _record("distilled", method="mtt", labels="hard", accuracies=[0.6], extra=standardised),
    ]
    paths = {write_record(tmp_path, r) for r in records}
    assert len(paths) == len(records)  # the ZCA baselines overwrite no standardised one
    assert inputs_label(records[2]) == "ZCA" and inputs_label(_record("random")) == "standardised"
    table = results_table(read_records(tmp_path), "d")
    # each set beside the baselines on its own inputs; the newer DATM set (ZCA) replaces the older one
    zca_row = "| 1 | convnet, ZCA inputs | datm | – | 50.0 ± 0.0 (n=1) | – | 30.0 ± 0.0 (n=1) | 70.0 ± 0.0 (n=1) |"
    assert zca_row in table
    assert "| 1 | convnet | mtt | – | – | 60.0 ± 0.0 (n=1) | 40.0 ± 0.0 (n=1) | 80.0 ± 0.0 (n=1) | 50 % |" in table
    assert "90.0" not in table


def test_sets_and_baselines_trained_in_mixed_precision_sit_beside_their_float32_twins(tmp_path):
    bf16 = {"protocol": {"epochs": 3, "mixed_precision": True}}
    full32 = {"protocol": {"epochs": 3}}
    stamp = {"finished_at": "2026-01-01T00:00:00+00:00"}
    records = [
        _record(accuracies=[0.5], artifact_sha256="01", **full32),
        {**_record(accuracies=[0.6], artifact_sha256="02", **bf16), **stamp},  # newer, yet no replacement
        _record("random", accuracies=[0.3], **full32),
        _record("random", accuracies=[0.35], **bf16),
    ]
    for record in records:
        write_record(tmp_path, record)
    table = results_table(read_records(tmp_path), "d")
    assert "| 1 | convnet | datm | – | 50.0 ± 0.0 (n=1) | – | 30.0 ± 0.0 (n=1) |" in table
    assert "| 1 | convnet, bf16 mixed | datm | – | 60.0 ± 0.0 (n=1) | – | 35.0 ± 0.0 (n=1) |" in table


@pytest.fixture(scope="module")
def artifact(tiny_buffer, tmp_path_factory):
    _, folder = tiny_buffer
    root = tmp_path_factory.mktemp("art")
    return run_distill(make_config(root, f"paths.buffers={folder}")) / "distilled.safetensors"


def test_evaluation_job_writes_records_and_table(artifact, tmp_path):
    records = run_evaluate(make_config(tmp_path, f"eval.artifact={artifact}"))
    kinds = sorted((r["set"], r["labels"]) for r in records)
    assert kinds == [("distilled", "hard"), ("distilled", "soft"), ("full", "hard"), ("random", "hard")]
    assert all(
        len(r["accuracies"]) == 2 and r["artifact_sha256"] is None or len(r["artifact_sha256"]) == 64 for r in records
    )
    table = (tmp_path / "results" / "digits.md").read_text()
    assert "| 2 | convnet (width 8, depth 2) | datm |" in table


def test_architecture_entries_name_the_set_model_its_defaults_or_an_exact_network():
    from distill.evaluate.run import architecture_specs
    from distill.models import ModelSpec

    own = ModelSpec("convnet", {"width": 16, "depth": 3})
    wide = ModelSpec("convnet", {"width": 128})
    specs = architecture_specs(["convnet", wide, "lenet", ModelSpec("convnet", {"width": 16, "depth": 3})], own)
    assert specs == {"convnet": own, "convnet(width=128)": wide, "lenet": ModelSpec("lenet")}
    assert architecture_specs([ModelSpec("convnet")], own) == {"convnet()": ModelSpec("convnet")}


def test_a_set_is_also_evaluated_on_a_network_with_other_options(artifact, tmp_path, monkeypatch):
    from distill.models import ModelSpec

    built, original = [], ModelSpec.build

    def build(self, *args, **kwargs):
        built.append(dict(self.options))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ModelSpec, "build", build)
    records = run_evaluate(
        make_config(
            tmp_path,
            f"eval.artifact={artifact}",
            "eval.architectures=[convnet,{name:convnet,width:4,depth:1}]",
            "eval.baselines=[random]",
            "eval.label_modes=[soft]",
            "eval.runs=1",
        )
    )
    options = sorted((r["set"], r["architecture"], json.dumps(r["model_options"], sort_keys=True)) for r in records)
    own = json.dumps(load_artifact(artifact)[2]["model_options"], sort_keys=True)
    assert options == sorted(
        [(kind, "convnet", narrow) for kind in ("distilled", "random") for narrow in ('{"depth": 1, "width": 4}', own)]
    )
    assert built.count({"width": 4, "depth": 1}) == 2 and len(built) == 4
    table = (tmp_path / "results" / "digits.md").read_text()
    assert "| 2 | convnet (width 4, depth 1) | datm |" in table and "| 2 | convnet (width 8, depth 2) | datm |" in table
    assert len(list((tmp_path / "results" / "records").glob("*.json"))) == 4


def test_an_interrupted_evaluation_resumes_with_the_runs_it_had_finished(tmp_path):
    from distill.data.prepare import prepare_data
    from distill.evaluate.run import evaluate
    from distill.models import ModelSpec

    data = prepare_data("digits")
    common = dict(
        model=ModelSpec("convnet", {"width": 8, "depth": 1}), runs=3, baselines=["random"], ipc=2, label_modes=["hard"]
    )
    protocol = Protocol(epochs=15)
    reference = evaluate(data, protocol=protocol, log=lambda line: None, **common)[0]

    class Killed(Exception):
        pass

    def killed_after(runs):
        lines = []

        def log(line):
            lines.append(line)
            if len(lines) == runs:
                raise Killed

        return log

    folder = tmp_path / "unfinished"
    with pytest.raises(Killed):
        evaluate(data, protocol=protocol, log=killed_after(2), resume_folder=folder, **common)
    assert len(list(folder.glob("*.json"))) == 2
    kept_seconds = sum(json.loads(path.read_text())["seconds"] for path in folder.glob("*.json"))
    lines = []
    resumed = evaluate(data, protocol=protocol, log=lines.append, resume_folder=folder, **common)[0]
    assert sum("finished before" in line for line in lines) == 2 and len(lines) == 3
    assert resumed["accuracies"] == reference["accuracies"] and resumed["seeds"] == reference["seeds"]
    # the record says which part of its seconds the interrupted call spent
    assert reference["resumed_seconds"] == 0.0
    assert resumed["resumed_seconds"] == pytest.approx(kept_seconds, abs=0.01) and kept_seconds > 0
    assert resumed["wall_seconds"] > resumed["resumed_seconds"]
    assert list(folder.glob("*.json")) == []
    # a stored run is only taken by a call that would train it the same way
    with pytest.raises(Killed):
        evaluate(data, protocol=protocol, log=killed_after(2), resume_folder=folder, **common)
    lines.clear()
    evaluate(data, protocol=Protocol(epochs=16), log=lines.append, resume_folder=folder, **common)
    assert len(lines) == 3 and not any("finished before" in line for line in lines)


def test_evaluation_progress_counts_every_training_pass_once(tmp_path):
    from distill.data.prepare import prepare_data
    from distill.evaluate.run import evaluate
    from distill.models import ModelSpec

    data = prepare_data("digits")
    common = dict(
        model=ModelSpec("convnet", {"width": 4, "depth": 1}),
        runs=2,
        baselines=["random", "full"],
        ipc=1,
        label_modes=["hard"],
        full_epochs=1,
        protocol=Protocol(epochs=3),
        log=lambda line: None,
    )
    total = 2 * (3 + 1) + 2 * (1 + 1)  # two random-subset runs of 3 + 1 passes, two full-set runs of 1 + 1
    for parallel, step in ((1, 1), (2, 2)):
        seen = []
        evaluate(data, parallel=parallel, on_progress=lambda done, of: seen.append((done, of)), **common)
        assert seen == [(done, total) for done in range(step, total + 1, step)]


def test_the_evaluation_job_keeps_finished_runs_until_its_records_are_written(artifact, tmp_path, monkeypatch):
    run_module = importlib.import_module("distill.evaluate.run")  # `distill.evaluate` is also the function

    train, calls = run_module._train_runs, []

    def train_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return train(*args, **kwargs)

    config = make_config(tmp_path, f"eval.artifact={artifact}", "eval.baselines=[random]", "eval.label_modes=[soft]")
    monkeypatch.setattr(run_module, "_train_runs", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_evaluate(config)
    unfinished = tmp_path / "results" / "unfinished_evaluation"
    assert len(list(unfinished.glob("*.json"))) == 2 and not (tmp_path / "results" / "records").exists()
    calls.clear()
    records = run_evaluate(config)
    assert len(calls) == 2 and sorted(len(r["accuracies"]) for r in records) == [2, 2]
    assert not unfinished.exists()


def test_bad_artifacts_are_refused(artifact, tmp_path):
    synthetic, pre, meta = load_artifact(artifact)
    meta.pop("sha256")
    bad = dict(synthetic, lr=torch.tensor(-0.1))
    save_artifact(tmp_path / "neg.safetensors", bad, meta, pre)
    with pytest.raises(DistillError, match="lr -0.1 <= 0"):
        load_artifact(tmp_path / "neg.safetensors")
    other = {**meta, "dataset_fingerprint": {**meta["dataset_fingerprint"], "dataset": "mnist", "resolution": [28, 28]}}
    save_artifact(tmp_path / "other.safetensors", synthetic, other, pre)
    with pytest.raises(DistillError, match="distilled on dataset='mnist'.*set dataset=mnist"):
        run_evaluate(make_config(tmp_path, f"eval.artifact={tmp_path / 'other.safetensors'}"))
    raw = bytearray(artifact.read_bytes())
    (tmp_path / "cut.safetensors").write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(DistillError, match="corrupt|invalid"):
        load_artifact(tmp_path / "cut.safetensors")
    with pytest.raises(DistillError, match="cannot take 1x8x8"):
        run_evaluate(make_config(tmp_path, f"eval.artifact={artifact}", "eval.architectures=[lenet]"))
    with pytest.raises(DistillError, match="protocol.lr must be a number > 0"):
        run_evaluate(make_config(tmp_path, f"eval.artifact={artifact}", "protocol.lr=-1"))


# slow (17 s of process start-up): the rank split it relies on (`Rank`) stays covered in the default suite by
# the two-process expert test; run it with -m slow
@pytest.mark.slow
def test_two_gloo_processes_give_the_same_records_as_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    common = [*TINY, "eval.baselines=[random]", "eval.runs=3", "device=cpu"]
    single = subprocess.run(
        [sys.executable, "-m", "distill.jobs.evaluate", *common, f"paths.results={tmp_path}/one"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "distill.jobs.evaluate",
            *common,
            f"paths.results={tmp_path}/two",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-2000:]
    one, two = read_records(tmp_path / "one" / "records"), read_records(tmp_path / "two" / "records")
    assert len(one) == len(two) == 1
    assert one[0]["accuracies"] == two[0]["accuracies"] and one[0]["seeds"] == two[0]["seeds"]


def test_repeats_trained_at_once_give_the_records_of_repeats_one_by_one():
    from distill.data.prepare import prepare_data
    from distill.evaluate.run import evaluate
    from distill.models import ModelSpec

    data = prepare_data("digits", dtype=torch.float64)
    synthetic = {
        "images": data.train_images[:20],
        "label_logits": torch.randn(20, 10, dtype=torch.float64),
        "lr": torch.tensor(0.01),
        "classes": torch.arange(10).repeat_interleave(2),
    }
    common = dict(
        protocol=Protocol(epochs=4, batch_size=8),
        model=ModelSpec("convnet", {"width": 4, "depth": 1}),
        runs=3,
        baselines=("random",),
        label_modes=("soft",),
        log=lambda line: None,
    )
    one = evaluate(data, synthetic, **common)
    many = evaluate(data, synthetic, parallel=3, **common)
    for a, b in zip(one, many):
        assert a["set"] == b["set"] and a["seeds"] == b["seeds"]
        assert a["accuracies"] == pytest.approx(b["accuracies"], abs=1e-9)
