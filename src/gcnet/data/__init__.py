"""Datasets and transforms."""

from .datasets import BadImageError, build_classification_data, collate_skip_bad
from .synthetic import CONTEXT_CLASSES, SyntheticContext

__all__ = [
    "CONTEXT_CLASSES",
    "BadImageError",
    "SyntheticContext",
    "build_classification_data",
    "collate_skip_bad",
]
