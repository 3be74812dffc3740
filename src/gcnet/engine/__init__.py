"""The task-agnostic training engine: the loop, schedules, AMP, EMA, DDP, checkpoints and
logging. What differs between tasks comes from `gcnet.tasks`."""

from gcnet.tasks.classification import evaluate_classification as evaluate

from .trainer import build_model_from_config, train

__all__ = ["build_model_from_config", "evaluate", "train"]
