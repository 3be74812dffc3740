"""Parameter and FLOP counts (FLOPs from torch's own ``torch.utils.flop_counter``).

FLOPs here are multiply-accumulates x 2 of matmul/conv-like ops, as FlopCounterMode counts
them; element-wise ops (softmax, norms, adds) are not counted, as in the paper's tables.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_flops"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Forward FLOPs of ``model(*inputs)`` (2 x MACs), model in its current mode."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(*inputs)
    return counter.get_total_flops()
