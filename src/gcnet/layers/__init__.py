"""The global-context framework and its blocks: GC, Non-local, Simplified NL, SE."""

from .context import (
    FUSION_TYPES,
    POOLING_TYPES,
    ContextModeling,
    ContextTransform,
    GlobalContextBlock,
    SimplifiedNonLocalBlock,
)
from .nonlocal_ import NL_MODES, NonLocalBlock
from .registry import create_block, list_blocks, register_block
from .se import SqueezeExcitation

__all__ = [
    "FUSION_TYPES",
    "NL_MODES",
    "POOLING_TYPES",
    "ContextModeling",
    "ContextTransform",
    "GlobalContextBlock",
    "NonLocalBlock",
    "SimplifiedNonLocalBlock",
    "SqueezeExcitation",
    "create_block",
    "list_blocks",
    "register_block",
]
