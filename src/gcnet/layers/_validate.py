"""Argument and input checks shared by the blocks: every failure names expected vs received."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_channels(channels: object) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    return channels


def bottleneck_channels(channels: int, ratio: float, what: str = "ratio") -> int:
    """P = int(C * ratio), as the official code computes it; P must be >= 1."""
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or ratio <= 0:
        raise ValueError(f"{what} must be a positive number, got {ratio!r}")
    hidden = int(channels * ratio)
    if hidden < 1:
        raise ValueError(
            f"{what}={ratio!r} leaves int({channels} * {ratio}) = {hidden} bottleneck channels; "
            f"need at least 1 (use {what} >= {1.0 / channels:.4g} for {channels} channels)"
        )
    return hidden


def check_input(module: str, x: torch.Tensor, channels: int) -> None:
    """Inputs are (N, C, L), (N, C, H, W) or (N, C, T, H, W) with C == channels."""
    if x.dim() < 3 or x.dim() > 5:
        raise ValueError(
            f"{module} expects a 3D (N,C,L), 4D (N,C,H,W) or 5D (N,C,T,H,W) input, "
            f"got {x.dim()}D input of shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{module} was built for {channels} channels, got input with {x.shape[1]} "
            f"channels (shape {tuple(x.shape)})"
        )
