"""Name -> block constructor, so backbones can plug in any block of the family by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from .axis_attention import (
    CBAM,
    CoordAttention,
    EfficientLocalAttention,
    LightCBAM,
    SimpleCoordAttention,
    StripAttention,
)
from .channel_gates import (
    CircularEfficientChannelAttention,
    EffectiveSqueezeExcite,
    EfficientChannelAttention,
    EfficientChannelAttentionMlp,
    GatedChannelTransform,
    GatherExcite,
    GlobalResponseNorm,
    StyleRecalibration,
)
from .context import GlobalContextBlock, SimplifiedNonLocalBlock
from .layout import check_layout, wrap_layout
from .nonlocal_ import NonLocalBlock
from .se import SqueezeExcitation

__all__ = [
    "block_factory",
    "block_info",
    "create_block",
    "list_blocks",
    "register_block",
    "registered_classes",
]

_BLOCKS: dict[str, Callable[..., nn.Module]] = {
    "gc": GlobalContextBlock,
    "nl": NonLocalBlock,
    "snl": SimplifiedNonLocalBlock,
    "se": SqueezeExcitation,
    # -- channel gates (layers/channel_gates.py) --
    "eca": EfficientChannelAttention,
    "ecam": EfficientChannelAttentionMlp,
    "ceca": CircularEfficientChannelAttention,
    "ese": EffectiveSqueezeExcite,
    "ge": GatherExcite,
    "grn": GlobalResponseNorm,
    "srm": StyleRecalibration,
    "gct": GatedChannelTransform,
    # -- end channel gates --
    # -- axis attention (layers/axis_attention.py) --
    "cbam": CBAM,
    "lcbam": LightCBAM,
    "coord": CoordAttention,
    "scoord": SimpleCoordAttention,
    "ela": EfficientLocalAttention,
    "strip": StripAttention,
    # -- end axis attention --
}


def register_block(name: str, fn: Callable[..., nn.Module] | None = None):
    """Register ``fn(channels, **kw) -> nn.Module`` under ``name`` (usable as a decorator)."""

    def deco(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BLOCKS:
            raise ValueError(f"block {name!r} is already registered")
        _BLOCKS[name] = f
        return f

    return deco(fn) if fn is not None else deco


def list_blocks() -> list[str]:
    """The names `create_block` takes, sorted (``["gc", "nl", "se", "snl"]`` and any
    registered with `register_block`)."""
    return sorted(_BLOCKS)


def registered_classes() -> list[type]:
    """The block classes behind the registered names (a partial's function, once each)."""
    out: list[type] = []
    for fn in _BLOCKS.values():
        fn = getattr(fn, "func", fn)
        if isinstance(fn, type) and fn not in out:
            out.append(fn)
    return out


def block_factory(name: str) -> Callable[..., nn.Module]:
    """What `create_block` calls for ``name``: the class, or the function / partial registered."""
    if name not in _BLOCKS:
        raise ValueError(f"unknown block {name!r}; expected one of {list_blocks()}")
    return _BLOCKS[name]


def block_info(name: str):
    """The `BlockInfo` of a registered block (pooling, transform, fusion, identity at init...),
    or None for a block registered without one."""
    if name not in _BLOCKS:
        raise ValueError(f"unknown block {name!r}; expected one of {list_blocks()}")
    fn = _BLOCKS[name]
    return getattr(fn, "info", None) or getattr(getattr(fn, "func", None), "info", None)


def create_block(
    name: str, channels: int, *, layout: str = "nchw", prefix_tokens: int = 0, **kwargs
) -> nn.Module:
    """Build a block of the family: ``gc``, ``nl``, ``snl``, ``se`` (or a registered name).

    ``layout``: ``"nchw"`` (the blocks' own (N, C, ...) maps), ``"nhwc"`` (channels-last maps)
    or ``"nlc"`` (token sequences, the first ``prefix_tokens`` passed through): see
    `gcnet.layers.layout`."""
    if name not in _BLOCKS:
        near = difflib.get_close_matches(str(name), _BLOCKS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown block {name!r}{hint}; expected one of {list_blocks()}")
    check_layout(layout, prefix_tokens)
    try:
        block = _BLOCKS[name](channels, **kwargs)
    except TypeError as e:  # unknown kwarg -> name the block and the bad argument
        raise ValueError(f"bad arguments for block {name!r}: {e}") from None
    return wrap_layout(block, channels, layout, prefix_tokens)
