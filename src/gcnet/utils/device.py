"""The device a run uses and its autocast context."""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["resolve_device", "autocast_ctx"]


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` -> a device (under torchrun: this rank's GPU)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def autocast_ctx(device: torch.device, amp: str):
    """``amp``: ``none`` (a null context), ``bf16`` or ``fp16``."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
