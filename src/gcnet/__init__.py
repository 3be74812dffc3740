"""gcnet: Global Context Networks in PyTorch."""

from .layers import (
    ContextModeling,
    ContextTransform,
    GlobalContextBlock,
    NonLocalBlock,
    SimplifiedNonLocalBlock,
    SqueezeExcitation,
    create_block,
    list_blocks,
)
from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "ContextModeling",
    "ContextTransform",
    "GlobalContextBlock",
    "NonLocalBlock",
    "SimplifiedNonLocalBlock",
    "SqueezeExcitation",
    "__version__",
    "create_block",
    "create_model",
    "list_models",
    "list_blocks",
]
