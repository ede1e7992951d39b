"""distill-eval: train fresh networks on a distilled set and on baselines; write records and tables."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from distill.config import Config
from distill.data.preprocess import Preprocessor
from distill.errors import DistillError
from distill.evaluate.records import read_records, write_record
from distill.evaluate.run import check_set_matches, evaluate
from distill.evaluate.tables import plot_accuracy_vs_ipc, write_table
from distill.interop import import_official_set, is_official_set
from distill.io.artifact import load_artifact
from distill.io.tensors import sha256_file
from distill.models.registry import ModelSpec
from distill.stages.common import in_config_terms, start


@in_config_terms
def run_evaluate(cfg: Config) -> list[dict]:
    """Evaluate `cfg.eval.artifact` (if any) and the baselines; returns the records written."""
    ctx = start(cfg, "eval")
    cfg, e = ctx.cfg, ctx.cfg.eval
    synthetic, meta, preprocessor, model = None, {}, None, cfg.model
    official = bool(e.artifact) and is_official_set(e.artifact)
    if e.artifact and not official:
        synthetic, pre_state, meta = load_artifact(e.artifact)
        stored = meta["dataset_fingerprint"]["preprocess"]
        preprocessor = Preprocessor.from_state(
            stored["kind"], pre_state, stored["zca_eps"], stored.get("statistics", "measured")
        )
        # the set is evaluated on the architecture it was distilled with, options included
        model = ModelSpec(meta.get("model", cfg.model.name), dict(meta.get("model_options", {})))
    data = ctx.data(preprocessor)
    if official:
        # the official code's images_best.pt / labels_best.pt / lr_best.pt, in this run's preprocessing
        synthetic, meta = _official(e.artifact, data)
    if synthetic is not None:
        try:
            check_set_matches(meta, data.fingerprint, e.artifact)
        except DistillError as exc:
            raise DistillError(
                f"{exc}: set dataset={meta['dataset_fingerprint'].get('dataset')} or pick the matching artifact"
            ) from None
    architectures = [_architecture(entry, cfg.model.name, model) for entry in e.architectures]
    # training passes (epochs) of this rank's runs, with rate and ETA
    bar = tqdm(desc="evaluate", unit="epoch", disable=not (cfg.progress and ctx.rank.is_main))

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    records = evaluate(
        data,
        synthetic,
        protocol=cfg.protocol,
        model=model,
        architectures=architectures,
        runs=e.runs,
        seed=cfg.seed,
        baselines=e.baselines,
        label_modes=e.label_modes,
        ipc=None if synthetic is not None else (e.ipc or cfg.distill.ipc),
        full_epochs=e.full_epochs,
        method=meta.get("method", "distilled"),
        meta=meta,
        rank=ctx.rank,
        parallel=e.parallel,
        # an interrupted evaluation resumes: its finished runs wait here until the records are written
        resume_folder=Path(cfg.paths.results) / "unfinished_evaluation",
        on_progress=progress,
        log=tqdm.write,
        compile_training=cfg.compile_training,
        mixed_precision=cfg.mixed_precision,
    )
    bar.close()
    if ctx.rank.is_main:
        folder = Path(cfg.paths.results) / "records"
        for record in records:
            if synthetic is not None and record["set"] == "distilled":
                record["artifact"] = str(e.artifact)
            write_record(folder, record)
            print(
                f"{record['set']} ({record['labels']} labels) {record['architecture']}: "
                f"{100 * record['mean']:.2f} ± {100 * record['std']:.2f} %"
            )
        update_tables(cfg, data.fingerprint["dataset"])
    return records


def _architecture(entry: str | dict, config_model: str, model: ModelSpec) -> str | ModelSpec:
    """An `eval.architectures` entry for `evaluate`: the config's model name stands for the set's own `model`
    (options included), another name for that model's defaults, a {name, **options} dict for that network."""
    if isinstance(entry, str):
        return model.name if entry == config_model else entry
    options = dict(entry)
    return ModelSpec(options.pop("name"), options)


def _official(folder: str, data) -> tuple[dict, dict]:
    synthetic = import_official_set(folder, data.num_classes, data.channels, data.resolution)
    soft = not bool(((synthetic["label_logits"] == 0) | (synthetic["label_logits"] == 1)).all())
    meta = {
        "soft_labels": soft,
        "method": "official",
        "selection": "the official code's images_best.pt",
        "sha256": sha256_file(Path(folder) / "images_best.pt"),
        "dataset_fingerprint": data.fingerprint,
    }
    return synthetic, meta


def update_tables(cfg: Config, dataset: str) -> None:
    """Rebuild the dataset's markdown table (and accuracy-vs-IPC plot) from all its records."""
    results = Path(cfg.paths.results)
    records = read_records(results / "records", dataset)
    table = cfg.table_path()
    write_table(
        table,
        records,
        f"{dataset}: distilled sets against baselines",
        "Written by `distill-eval` from the JSON records in `records/`; every number is a measured run.",
    )
    plot = plot_accuracy_vs_ipc(results / f"{dataset}_accuracy_vs_ipc.png", records, dataset)
    print(f"table: {table}" + (f"; plot: {plot}" if plot else ""))
