"""On-disk expert buffers: one safetensors file per expert, a JSON sidecar each, and a manifest.

Folder layout:
    expert_0000.safetensors   one tensor per parameter name, [epochs + 1, *shape], float32
    expert_0000.json          seed, epochs, per-epoch train loss / test accuracy, sha256 of the file
    manifest.json             format, config, dataset fingerprint, model, parameter table, experts
Every file is written atomically; the sidecar is written after its expert file, so an expert counts
as complete only when both exist and the sidecar's sha256 matches the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from distill.errors import DistillError
from distill.io.atomic import atomic_write_json
from distill.io.tensors import matches_sha256, read_header, save_tensors, sha256_file

BUFFER_FORMAT = "distill.expert-buffer/1"


@dataclass(frozen=True)
class ModelSignature:
    """What a buffer must agree on with its user: model name/options and the parameter table."""

    name: str
    options: dict
    param_names: tuple[str, ...]
    param_shapes: tuple[tuple[int, ...], ...]

    @property
    def num_params(self) -> int:
        total = 0
        for shape in self.param_shapes:
            count = 1
            for dim in shape:
                count *= dim
            total += count
        return total

    def to_json(self) -> dict:
        return {"name": self.name, "options": self.options, "param_names": list(self.param_names),
                "param_shapes": [list(s) for s in self.param_shapes], "num_params": self.num_params}

    @staticmethod
    def from_json(obj: dict) -> "ModelSignature":
        return ModelSignature(obj["name"], obj.get("options", {}), tuple(obj["param_names"]),
                              tuple(tuple(s) for s in obj["param_shapes"]))


def expert_path(folder: Path, index: int) -> Path:
    return Path(folder) / f"expert_{index:04d}.safetensors"


def sidecar_path(folder: Path, index: int) -> Path:
    return Path(folder) / f"expert_{index:04d}.json"


def write_expert(folder: Path, index: int, params: dict[str, torch.Tensor], signature: ModelSignature,
                 fingerprint: dict, seed: int, train_loss: list[float], test_accuracy: list[float],
                 extra: dict | None = None) -> dict:
    """Write expert `index` (params[name]: [epochs + 1, *shape]) and its sidecar. Returns the sidecar dict.

    `extra` (e.g. training time) goes into the sidecar only, so the expert file's bytes stay reproducible.
    """
    if tuple(params) != signature.param_names:
        raise DistillError(f"expert {index}: parameter names {list(params)[:3]}... differ from the model's")
    epochs = next(iter(params.values())).shape[0] - 1
    path = expert_path(folder, index)
    save_tensors(path, {k: v.float() for k, v in params.items()}, {
        "format": BUFFER_FORMAT, "model": signature.name, "dataset_fingerprint": fingerprint,
        "seed": seed, "epochs": epochs, "param_names": list(signature.param_names),
    })
    sidecar = {"index": index, "file": path.name, "seed": seed, "epochs": epochs, "train_loss": train_loss,
               "test_accuracy": test_accuracy, "sha256": sha256_file(path), **(extra or {})}
    atomic_write_json(sidecar_path(folder, index), sidecar)
    return sidecar


def completed_expert(folder: Path, index: int, seed: int, epochs: int) -> dict | None:
    """The sidecar of expert `index` if it is complete, verified and made with this seed and epoch count."""
    side, path = sidecar_path(folder, index), expert_path(folder, index)
    if not (side.is_file() and path.is_file()):
        return None
    try:
        record = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("seed") != seed or record.get("epochs") != epochs or not matches_sha256(path, record.get("sha256")):
        return None
    return record


def write_manifest(folder: Path, config: dict, fingerprint: dict, signature: ModelSignature,
                   experts: list[dict]) -> Path:
    """Atomically write manifest.json describing the folder's experts (sorted by index)."""
    experts = sorted(experts, key=lambda e: e["index"])
    epochs = {e["epochs"] for e in experts}
    return atomic_write_json(Path(folder) / "manifest.json", {
        "format": BUFFER_FORMAT, "config": config, "dataset_fingerprint": fingerprint,
        "model": signature.to_json(), "epochs": min(epochs) if epochs else 0, "experts": experts,
    })


def check_folder_owner(folder: Path, fingerprint: dict, signature: ModelSignature) -> None:
    """Refuse to add experts to a folder whose manifest belongs to another dataset/model."""
    manifest = Path(folder) / "manifest.json"
    if not manifest.is_file():
        return
    try:
        existing = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        raise DistillError(f"{manifest} is corrupt: delete it (the expert files are kept and re-verified)") from None
    problem = describe_mismatch(existing, fingerprint, signature)
    if problem:
        raise DistillError(f"{folder} holds other buffers ({problem}): choose another buffer folder or delete it")


def describe_mismatch(manifest: dict, fingerprint: dict, signature: ModelSignature) -> str | None:
    """A sentence naming the first difference between a manifest and what the caller expects, or None."""
    if manifest.get("format") != BUFFER_FORMAT:
        return f"format {manifest.get('format')!r}, expected {BUFFER_FORMAT!r}"
    theirs = manifest.get("dataset_fingerprint", {})
    for key in sorted(set(theirs) | set(fingerprint)):
        if theirs.get(key) != fingerprint.get(key):
            if key == "preprocess":
                a, b = theirs.get(key, {}), fingerprint.get(key, {})
                if a.get("kind") != b.get("kind"):
                    return f"buffer made with {a.get('kind')} preprocessing, this run uses {b.get('kind')}"
                return f"preprocessing statistics differ ({a} vs {b})"
            return f"dataset {key}: buffer has {theirs.get(key)!r}, run has {fingerprint.get(key)!r}"
    model = ModelSignature.from_json(manifest["model"])
    if model.name != signature.name:
        return f"model: buffer has '{model.name}', run has '{signature.name}'"
    if model.param_names != signature.param_names or model.param_shapes != signature.param_shapes:
        return (f"model parameters differ ({model.num_params} vs {signature.num_params} parameters; "
                f"options {model.options} vs {signature.options})")
    return None


class BufferReader:
    """Random access to (expert k, epoch t) as one flat vector, reading only that epoch from disk.

    Checks on open: the manifest exists and matches `fingerprint` and `signature` (when given), and
    every expert holds at least `min_epochs` epochs. Each expert file's sha256 is checked against the
    manifest the first time it is read.
    """

    def __init__(self, folder: str | Path, fingerprint: dict | None = None, signature: ModelSignature | None = None,
                 min_epochs: int = 0, verify: bool = True):
        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            raise DistillError(f"no expert buffer at {self.folder} (manifest.json missing): run distill-buffers "
                               "with the same dataset/model first, or set paths.buffers")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            raise DistillError(f"{manifest_path} is corrupt: re-run distill-buffers to rewrite it") from None
        if fingerprint is not None and signature is not None:
            problem = describe_mismatch(self.manifest, fingerprint, signature)
            if problem:
                raise DistillError(f"buffer {self.folder} does not match this run: {problem}")
        self.signature = ModelSignature.from_json(self.manifest["model"])
        self.experts = self.manifest["experts"]
        if not self.experts:
            raise DistillError(f"buffer {self.folder} holds no experts: run distill-buffers")
        self.epochs = min(e["epochs"] for e in self.experts)
        if self.epochs < min_epochs:
            raise DistillError(f"buffer {self.folder} has {self.epochs} epochs but the window needs {min_epochs} "
                               "(max start epoch - 1 + expert epochs): train experts of at least that many epochs "
                               "into another folder, or narrow the window")
        self.verify = verify
        self._verified: set[int] = set()

    def __len__(self) -> int:
        return len(self.experts)

    def _open(self, k: int) -> Path:
        entry = self.experts[k]
        path = self.folder / entry["file"]
        if self.verify and k not in self._verified:
            if not path.is_file():
                raise DistillError(f"{path} is missing: re-run distill-buffers to recreate it")
            if not matches_sha256(path, entry["sha256"]):
                raise DistillError(f"{path} fails its sha256 check (truncated or modified): delete it and re-run "
                                   "distill-buffers to recreate it")
            header, _ = read_header(path)
            for name, shape in zip(self.signature.param_names, self.signature.param_shapes):
                if name not in header or tuple(header[name]["shape"][1:]) != shape:
                    raise DistillError(f"{path}: tensor '{name}' missing or misshapen: delete it and re-run distill-buffers")
            self._verified.add(k)
        return path

    def params(self, k: int, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Expert k's parameters after `epoch` epochs (0 = initialisation) as a flat float32 vector [P]."""
        if not 0 <= k < len(self.experts):
            raise IndexError(f"expert {k} of {len(self.experts)}")
        if not 0 <= epoch <= self.experts[k]["epochs"]:
            raise DistillError(f"expert {k} has epochs 0..{self.experts[k]['epochs']}, epoch {epoch} was asked for")
        path = self._open(k)
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            pieces = [handle.get_slice(name)[epoch].reshape(-1) for name in self.signature.param_names]
        return torch.cat(pieces).to(device)
