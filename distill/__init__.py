"""Dataset-distillation workbench: expert buffers, DATM/MTT trajectory matching, evaluation."""

__version__ = "0.1.0"
