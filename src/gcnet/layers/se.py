"""Squeeze-Excitation (Hu et al., 2018) as an instance of the global-context framework."""

from __future__ import annotations

from ._info import BlockInfo
from .context import GlobalContextBlock

__all__ = ["SqueezeExcitation"]


class SqueezeExcitation(GlobalContextBlock):
    """SE: average pooling, FC(C->P)-ReLU-FC(P->C) (no LayerNorm), sigmoid scaling fusion.

    P = int(C * ratio). Default (PyTorch) initialisation everywhere, as in SENet.
    Scale fusion: it does not start as the identity (x * sigmoid(.) halves x at zero logits).
    """

    info = BlockInfo(
        title="SE",
        pooling="average over all positions",
        transform="FC C->C/16, ReLU, FC C/16->C, sigmoid",
        fusion="scale",
        identity_at_init=False,
        dims=(1, 2, 3),
        paper="Hu et al., Squeeze-and-Excitation Networks, CVPR 2018",
        timm=("se",),
        timm_classes=("SEModule",),
        note="timm rounds C/16 to a multiple of 8 (`rd_divisor`); `from_timm` keeps its width",
    )

    def __init__(self, channels: int, ratio: float = 1.0 / 16) -> None:
        super().__init__(channels, ratio=ratio, pooling="avg", fusion="mul", norm=False, zero_init_last=False)
