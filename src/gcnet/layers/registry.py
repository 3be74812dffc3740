"""Name -> block constructor, so backbones can plug in any block of the family by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from .context import GlobalContextBlock, SimplifiedNonLocalBlock
from .nonlocal_ import NonLocalBlock
from .se import SqueezeExcitation

__all__ = ["create_block", "register_block", "list_blocks"]

_BLOCKS: dict[str, Callable[..., nn.Module]] = {
    "gc": GlobalContextBlock,
    "nl": NonLocalBlock,
    "snl": SimplifiedNonLocalBlock,
    "se": SqueezeExcitation,
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


def create_block(name: str, channels: int, **kwargs) -> nn.Module:
    """Build a block of the family: ``gc``, ``nl``, ``snl``, ``se`` (or a registered name)."""
    if name not in _BLOCKS:
        near = difflib.get_close_matches(str(name), _BLOCKS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown block {name!r}{hint}; expected one of {list_blocks()}")
    try:
        return _BLOCKS[name](channels, **kwargs)
    except TypeError as e:  # unknown kwarg -> name the block and the bad argument
        raise ValueError(f"bad arguments for block {name!r}: {e}") from None
