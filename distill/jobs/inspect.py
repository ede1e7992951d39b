"""distill-inspect PATH: what a distilled set, a run folder, a buffer folder or an official set holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distill.errors import DistillError


def describe(path: str | Path) -> dict:
    """A JSON-able description of `path`: a distilled.safetensors (or its run folder), a buffer folder
    (manifest.json) or an official set folder (images_best.pt ...)."""
    from distill.interop import OFFICIAL_FILES, is_official_set
    from distill.io.artifact import load_artifact

    path = Path(path)
    if (path / "manifest.json").is_file():
        manifest = json.loads((path / "manifest.json").read_text())
        experts = manifest.get("experts", [])
        return {
            "kind": "buffer",
            "folder": str(path),
            "dataset": manifest.get("dataset_fingerprint"),
            "model": manifest.get("model", {}).get("name"),
            "model_options": manifest.get("model", {}).get("options"),
            "parameters": manifest.get("model", {}).get("num_params"),
            "experts": len(experts),
            "epochs": manifest.get("epochs"),
            "final_test_accuracy": [round(e["test_accuracy"][-1], 4) for e in experts if e.get("test_accuracy")],
        }
    if is_official_set(path):
        import torch

        shapes = {
            name: list(torch.load(path / name, map_location="cpu", weights_only=True).shape) for name in OFFICIAL_FILES
        }
        return {"kind": "official set", "folder": str(path), "shapes": shapes}
    synthetic, _, meta = load_artifact(path)
    return {
        "kind": "distilled set",
        "path": str(path),
        "images": list(synthetic["images"].shape),
        "label_logits": list(synthetic["label_logits"].shape),
        "lr": float(synthetic["lr"]),
        **{
            k: meta.get(k)
            for k in (
                "method",
                "ipc",
                "model",
                "model_options",
                "soft_labels",
                "iteration",
                "selection",
                "selection_score",
                "buffer",
                "dataset_fingerprint",
                "sha256",
            )
        },
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: distill-inspect PATH   (a run folder, distilled.safetensors, buffer folder or official set)")
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    try:
        print(json.dumps(describe(argv[0]), indent=2, default=str))
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
