"""Blocks on channels-last maps and token sequences: ``layout="nhwc"`` and ``"nlc"``.

The blocks of the family take channels-first maps, (N, C, L), (N, C, H, W) or
(N, C, T, H, W). `LayoutAdapter` runs one on the other layouts models use inside their blocks:

- ``"nhwc"``: channels last, (N, H, W, C), (N, T, H, W, C) or (N, L, C): timm's ConvNeXt MLP,
  torchvision's Swin blocks;
- ``"nlc"``: token sequences (N, L, C), e.g. a ViT's tokens. The first ``prefix_tokens``
  (a class token, register or distillation tokens) are passed through unchanged and are not
  part of the context: the block pools over, and fuses into, the patch tokens only.

The move to (N, C, ...) is a view, not a copy: the GC family pools and fuses a channels-last
strided tensor in its own memory layout, so a ``"nhwc"`` GC block reads and writes the map
once, as the (N, C, H, W) one does. The output is returned contiguous in the caller's layout
(a copy only where the block returned another memory layout).

The adapter's state-dict keys are the wrapped block's own (no ``block.`` level), so weights
move between a block and its channels-last twin unchanged; its parameter *names* have the
``block.`` level. Attributes it does not have are the block's (``adapter.channels``).
"""

from __future__ import annotations

import torch
from torch import nn

from ._transparent import TransparentWrapper

__all__ = ["LAYOUTS", "LayoutAdapter", "check_layout", "wrap_layout"]

LAYOUTS = ("nchw", "nhwc", "nlc")


def check_layout(layout: object, prefix_tokens: object = 0) -> str:
    """``layout`` when it is one of `LAYOUTS` and ``prefix_tokens`` fits it, else a ValueError."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(
            f"layout must be one of {LAYOUTS} ((N, C, ...) maps, channels-last maps, token "
            f"sequences), got {layout!r}"
        )
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
        raise ValueError(f"prefix_tokens must be a non-negative int, got {prefix_tokens!r}")
    if prefix_tokens and layout != "nlc":
        raise ValueError(
            f"prefix_tokens={prefix_tokens} needs layout='nlc' (token sequences), got layout={layout!r}"
        )
    return layout


class LayoutAdapter(TransparentWrapper):
    """``block`` (which takes (N, C, ...) maps) on channels-last maps or token sequences.

    Args:
        block: a block of the family (any module mapping (N, C, ...) to the same shape).
        channels: C, the last dim of the inputs.
        layout: ``"nhwc"`` (N, ..., C) of rank 3 to 5, or ``"nlc"`` (N, L, C).
        prefix_tokens: ``"nlc"`` only: the leading tokens (class, register, distillation)
            passed through unchanged and left out of the context.
    """

    def __init__(self, block: nn.Module, channels: int, layout: str = "nhwc", prefix_tokens: int = 0) -> None:
        super().__init__()
        check_layout(layout, prefix_tokens)
        if layout == "nchw":
            raise ValueError("LayoutAdapter is for layout='nhwc' or 'nlc'; an 'nchw' block needs none")
        self.block = block
        self.channels = channels
        self.layout = layout
        self.prefix_tokens = prefix_tokens

    def _check(self, x: torch.Tensor) -> None:
        ranks = (3,) if self.layout == "nlc" else (3, 4, 5)
        if x.dim() not in ranks or x.shape[-1] != self.channels or x.shape[1] <= self.prefix_tokens:
            want = "(N, L, C)" if self.layout == "nlc" else "(N, L, C), (N, H, W, C) or (N, T, H, W, C)"
            tokens = f" with more than {self.prefix_tokens} tokens" if self.prefix_tokens else ""
            raise ValueError(
                f"{type(self.block).__name__} (layout={self.layout!r}) expects a {want} input with "
                f"C = {self.channels}{tokens}, got shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4, 5) or x.shape[-1] != self.channels or self.layout == "nlc":
            self._check(x)
        k = self.prefix_tokens
        if k:
            y = self.block(x[:, k:].transpose(1, 2)).transpose(1, 2)
            return torch.cat((x[:, :k], y), dim=1)
        return self.block(x.movedim(-1, 1)).movedim(1, -1).contiguous()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The block's attention map for ``x`` in this layout (over the patch tokens for
        ``"nlc"`` with prefix tokens): what ``block.attention`` returns for the (N, C, ...) view."""
        self._check(x)
        return self.block.attention(x[:, self.prefix_tokens :].movedim(-1, 1))

    # the block's keys at the adapter's own name: a block and its channels-last twin share them
    _inner = "block"

    def extra_repr(self) -> str:
        tokens = f", prefix_tokens={self.prefix_tokens}" if self.prefix_tokens else ""
        return f"layout={self.layout!r}{tokens}"


def wrap_layout(block: nn.Module, channels: int, layout: str = "nchw", prefix_tokens: int = 0) -> nn.Module:
    """``block`` itself for ``layout="nchw"``, else a `LayoutAdapter` around it."""
    check_layout(layout, prefix_tokens)
    if layout == "nchw":
        return block
    return LayoutAdapter(block, channels, layout, prefix_tokens)
