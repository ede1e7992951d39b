"""Thin Hydra entry points wiring data, models, buffers, matching and evaluation."""
