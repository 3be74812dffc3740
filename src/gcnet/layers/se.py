"""Squeeze-Excitation (Hu et al., 2018) as an instance of the global-context framework."""

from __future__ import annotations

from .context import GlobalContextBlock

__all__ = ["SqueezeExcitation"]


class SqueezeExcitation(GlobalContextBlock):
    """SE: average pooling, FC(C->P)-ReLU-FC(P->C) (no LayerNorm), sigmoid scaling fusion.

    P = int(C * ratio). Default (PyTorch) initialisation everywhere, as in SENet.
    """

    def __init__(self, channels: int, ratio: float = 1.0 / 16) -> None:
        super().__init__(channels, ratio=ratio, pooling="avg", fusion="mul", norm=False, zero_init_last=False)
