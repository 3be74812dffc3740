"""Training / evaluation engine: loops, DDP, checkpoints, logging."""

from .trainer import build_model_from_config, evaluate, train

__all__ = ["build_model_from_config", "evaluate", "train"]
