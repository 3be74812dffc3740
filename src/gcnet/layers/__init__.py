"""The global-context framework and its blocks: GC, Non-local, Simplified NL, SE, and the
light global-context family (ECA, effective SE, Gather-Excite, CBAM, coordinate attention,
ELA, strip attention, GRN, SRM, GCT), each registered by name (`create_block`)."""

from ._info import BlockInfo
from .axis_attention import (
    CBAM,
    AxisPooling,
    CoordAttention,
    EfficientLocalAttention,
    LightCBAM,
    SimpleCoordAttention,
    StripAttention,
    axis_pool,
)
from .channel_gates import (
    ChannelGate,
    CircularEfficientChannelAttention,
    EffectiveSqueezeExcite,
    EfficientChannelAttention,
    EfficientChannelAttentionMlp,
    GatedChannelTransform,
    GatherExcite,
    GlobalResponseNorm,
    StyleRecalibration,
)
from .context import (
    FUSION_TYPES,
    POOLING_TYPES,
    ContextModeling,
    ContextTransform,
    GlobalContextBlock,
    SimplifiedNonLocalBlock,
)
from .layout import LayoutAdapter
from .nonlocal_ import NL_MODES, NonLocalBlock
from .registry import block_info, create_block, list_blocks, register_block
from .se import SqueezeExcitation

__all__ = [
    "BlockInfo",
    "LayoutAdapter",
    "block_info",
    "CBAM",
    "AxisPooling",
    "CoordAttention",
    "EfficientLocalAttention",
    "LightCBAM",
    "SimpleCoordAttention",
    "StripAttention",
    "axis_pool",
    "FUSION_TYPES",
    "NL_MODES",
    "POOLING_TYPES",
    "ChannelGate",
    "CircularEfficientChannelAttention",
    "ContextModeling",
    "ContextTransform",
    "EffectiveSqueezeExcite",
    "EfficientChannelAttention",
    "EfficientChannelAttentionMlp",
    "GatedChannelTransform",
    "GatherExcite",
    "GlobalContextBlock",
    "GlobalResponseNorm",
    "NonLocalBlock",
    "SimplifiedNonLocalBlock",
    "SqueezeExcitation",
    "StyleRecalibration",
    "create_block",
    "list_blocks",
    "register_block",
]
