"""Model zoo behind a registry, and the flat-parameter functional call the distiller unrolls."""

from distill.models.flat import FlatModel
from distill.models.registry import ModelSpec, build_model, model_names, register_model

__all__ = ["FlatModel", "ModelSpec", "build_model", "model_names", "register_model"]
