"""A network's theoretical receptive field, computed structurally: which output positions an
input region can reach at all, whatever the weights.

The model is copied with every weight made positive (each conv / linear an average over its
inputs, biases zero, every norm the identity) and run in float64 on an input that is 1 on
the region and 0 elsewhere. Convs, ReLUs, max / average pooling, residual sums and bilinear
resizing then map non-negative maps to non-negative maps, and an output is non-zero exactly
when some path of non-zero kernel taps links it to the region, i.e. when the region lies in
its theoretical receptive field. (Blocks that pool over the whole image reach everything;
the tool is meant for the plain network.)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["reach", "receptive_field_halfwidth"]


@torch.no_grad()
def _positive_copy(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model).double().eval()
    for mod in m.modules():
        if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            fan_in = mod.weight[0].numel()
            mod.weight.fill_(1.0 / fan_in)
            if mod.bias is not None:
                mod.bias.zero_()
        elif isinstance(mod, nn.modules.batchnorm._NormBase):
            if mod.weight is not None:
                mod.weight.fill_(1.0)
                mod.bias.zero_()
            if mod.running_mean is not None:
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
        elif isinstance(mod, (nn.LayerNorm, nn.GroupNorm)):
            raise ValueError(f"reach: {type(mod).__name__} mixes positions or channels with a mean; "
                             "the structural receptive field is for plain conv networks")  # fmt: skip
        elif isinstance(mod, nn.Dropout) or isinstance(mod, nn.modules.dropout._DropoutNd):
            mod.p = 0.0
    return m


def _output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, dict):
        out = out["out"]
    return out


@torch.no_grad()
def reach(model: nn.Module, region: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool: the output positions of a dense model whose theoretical receptive
    field overlaps ``region`` ((N, H, W) bool, the input pixels), for any weights."""
    m = _positive_copy(model)
    cin = next(mod for mod in m.modules() if isinstance(mod, nn.modules.conv._ConvNd)).in_channels
    x = region.to(torch.float64).unsqueeze(1).expand(-1, cin, -1, -1).contiguous()
    out = _output(m, x)
    if (out < 0).any():
        raise ValueError("reach: the positive copy gave a negative output (the model has an op "
                         "that is not monotone; the structural receptive field does not apply)")  # fmt: skip
    return out.sum(1) > 0


def receptive_field_halfwidth(model: nn.Module, size: int = 128, phases: int = 8) -> int:
    """The largest |dy| or |dx| between an output pixel and an input pixel it depends on,
    over input pixels near the centre of a ``size`` x ``size`` input at every offset
    0..``phases``-1 in y and x (a strided network's reach depends on the offset modulo its
    stride): the receptive field is at most ``2 * halfwidth + 1`` pixels wide."""
    c = size // 2
    offsets = [(dy, dx) for dy in range(phases) for dx in range(phases)]
    region = torch.zeros(len(offsets), size, size, dtype=torch.bool)
    for k, (dy, dx) in enumerate(offsets):
        region[k, c + dy, c + dx] = True
    hit = reach(model, region)  # output o sees input i exactly when i reaches o
    half = 0
    for k, (dy, dx) in enumerate(offsets):
        ys, xs = torch.nonzero(hit[k], as_tuple=True)
        if ys.numel() == 0:
            raise ValueError("reach: an input pixel reaches no output")
        half = max(half, int((ys - c - dy).abs().max()), int((xs - c - dx).abs().max()))
    if half >= c - phases:
        raise ValueError(
            f"the receptive field reaches the border of a {size}x{size} input; use a larger size"
        )
    return half
