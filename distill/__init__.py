"""Dataset-distillation workbench: expert buffers, DATM/MTT trajectory matching, evaluation.

The whole path on plain arguments and dataclasses (the commands are thin layers over these):

    import distill
    data = distill.prepare_data("digits")                                   # load, split, normalise
    model = distill.ModelSpec("convnet", {"width": 32, "depth": 2})
    experts = distill.train_experts(data, model, distill.ExpertRecipe(epochs=10, batch_size=32), num_experts=3)
    settings = distill.DistillSettings(ipc=1, iterations=50, max_start_epoch=6, current_max_start_epoch=3)
    result = distill.distill_set(data, experts, model, settings)             # result.selected: the set
    records = distill.evaluate(data, result.selected, model=model, runs=2)  # beside a random subset and the full set

See examples/quickstart.py and the README's "Python API" section.
"""

__version__ = "0.2.0"

from distill.buffers.build import InMemoryExperts, build_buffer, import_buffer, train_experts  # noqa: E402
from distill.buffers.recipe import ExpertRecipe, GsamSettings  # noqa: E402
from distill.buffers.store import BufferReader  # noqa: E402
from distill.cli import load_config  # noqa: E402
from distill.config import Config  # noqa: E402
from distill.data.prepare import DatasetSpec, PreparedData, prepare_data  # noqa: E402
from distill.errors import DistillError  # noqa: E402
from distill.evaluate.protocol import Protocol  # noqa: E402
from distill.evaluate.run import evaluate  # noqa: E402
from distill.evaluate.tables import results_table  # noqa: E402
from distill.interop import export_image_folder, export_official_set, import_official_set  # noqa: E402
from distill.io.artifact import load_artifact, save_artifact  # noqa: E402
from distill.matching.loop import Distiller  # noqa: E402
from distill.matching.run import DistillResult, distill_set, write_run_outputs  # noqa: E402
from distill.matching.settings import DistillSettings  # noqa: E402
from distill.models.registry import ModelSpec, build_model, model_names  # noqa: E402

__all__ = [
    "BufferReader",
    "Config",
    "DatasetSpec",
    "DistillError",
    "DistillResult",
    "DistillSettings",
    "Distiller",
    "ExpertRecipe",
    "GsamSettings",
    "InMemoryExperts",
    "ModelSpec",
    "PreparedData",
    "Protocol",
    "build_buffer",
    "build_model",
    "distill_set",
    "evaluate",
    "export_image_folder",
    "export_official_set",
    "import_buffer",
    "import_official_set",
    "load_artifact",
    "load_config",
    "model_names",
    "prepare_data",
    "results_table",
    "save_artifact",
    "train_experts",
    "write_run_outputs",
]
