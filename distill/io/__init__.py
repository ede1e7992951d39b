"""Atomic writes, safe safetensors artifacts, manifests and checkpoints."""
