"""Parameter and FLOP counts (FLOPs from torch's own ``torch.utils.flop_counter``).

Two units: `count_flops` is what FlopCounterMode counts, 2 per multiply-add of
matmul / conv-like ops; `count_macs` is the multiply-adds, the unit of the paper's
tables (SENet's and the GC paper's "FLOPs": one multiply-add = one FLOP, ResNet-50 at 224 =
4.1 G). Element-wise ops (softmax, norms, adds) are not counted, as in the paper's tables.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["PAPER_UNIT", "count_flops", "count_macs", "count_params"]

#: how the tables label `count_macs`
PAPER_UNIT = "FLOPs = multiply-adds (the paper's unit); x2 = torch's flop counter"


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Forward FLOPs of ``model(*inputs)`` (2 x MACs), model in its current mode."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(*inputs)
    return counter.get_total_flops()


def count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Forward multiply-adds of ``model(*inputs)``: the paper's FLOPs (half of
    `count_flops`). Inputs on the ``meta`` device count without computing."""
    return count_flops(model, *inputs) // 2
