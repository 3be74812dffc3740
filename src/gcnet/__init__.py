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
from .models import add_context_blocks, create_model, inserted_blocks, list_models, remove_context_blocks

__version__ = "0.1.0"

__all__ = [
    "ContextModeling",
    "ContextTransform",
    "GlobalContextBlock",
    "NonLocalBlock",
    "SimplifiedNonLocalBlock",
    "SqueezeExcitation",
    "__version__",
    "add_context_blocks",
    "create_block",
    "create_model",
    "inserted_blocks",
    "list_models",
    "list_blocks",
    "remove_context_blocks",
]
