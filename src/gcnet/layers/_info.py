"""What a block of the family is, in the framework's terms: the docs' table, ``gcnet blocks``
and `gcnet.convert.block_from_timm` read it."""

from __future__ import annotations

import dataclasses

__all__ = ["BlockInfo"]


@dataclasses.dataclass(frozen=True)
class BlockInfo:
    """A block as pooling -> transform -> fusion.

    Attributes:
        title: the block's usual name (``"ECA"``).
        pooling: the context modeling (``"avg over all positions"``, ``"avg along W / along H"``).
        transform: what acts on the pooled context (``"1D conv over channels, k(C)"``).
        fusion: ``"scale"`` (x * gate), ``"add"`` (x + shift) or a short description.
        identity_at_init: whether a freshly built block returns its input unchanged (add fusion
            with a zero-initialised last layer, GRN / GCT with zero gates); scale fusion cannot.
        dims: the spatial ranks it takes (1: (N, C, L), 2: (N, C, H, W), 3: (N, C, T, H, W)).
        paper: the source (authors, venue, year).
        timm: the names timm's ``create_attn`` gives the same block (``()`` where timm lacks it).
        timm_classes: the timm module classes `from_timm` converts.
        note: where it does not apply, or how it differs from timm.
    """

    title: str
    pooling: str
    transform: str
    fusion: str
    identity_at_init: bool
    dims: tuple[int, ...]
    paper: str
    timm: tuple[str, ...] = ()
    timm_classes: tuple[str, ...] = ()
    note: str = ""
